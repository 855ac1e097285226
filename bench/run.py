"""`make bench`: how long people wait for the server, next to the same work done directly.

Each figure is measured through a real `mcp_server.py` subprocess over loopback WebSockets
and, where it makes sense, directly in this process (the same `PatientIndex`, backend or
`SummaryStore` call, no server). The two are interleaved request by request in one run, so
the ratio between them survives a noisy two-core machine even when the absolute numbers
do not.

    python bench/run.py                   # everything; builds the 100,000-patient index once
    python bench/run.py --quick           # skip the 100,000-patient figures
    python bench/run.py --scale 20000 --out bench/results.md

Writes the Markdown table to `--out` and the raw figures to the same name with `.json`.
Scale data and indexes live in `bench/data/` (git-ignored) and are reused between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import orjson  # noqa: E402
import prep  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results.md"
RUN_DIR = prep.DATA_DIR / "run"
LOG_DIR = prep.DATA_DIR / "logs"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Sizes of each measurement: large enough for a p95, small enough for a run of minutes.
N_CONNECT = 200
N_SEARCH = 200
N_SEARCH_QUICK = 100
N_EMBEDDED_PATIENTS = 40
EMBEDDED_MAX_TOKENS = 200
N_RELAY = 12
RELAY_TOKENS = 1024  # the summarize limit; the fake source sends exactly this many
N_SAVE = 30
SAVE_BIG_ROWS = 100_000
N_IDLE_CONNECTIONS = 200
N_STARTUPS = 3
CONC_SEARCH_CLIENTS = 100
CONC_STREAMS = 20
CONC_STREAM_TOKENS = 500
CONC_STREAM_TPS = 100  # per stream: 2,000 tokens/s in all, several times a real model's pace
PING_INTERVAL_S = 0.005

SUMMARY_TEXT = (
    "Janet Torres is a 67-year-old female with hypertension and type 2 diabetes, presenting "
    "with headache and fatigue. Her blood pressure is 152/94 mmHg and her blood sugar is "
    "182 mg/dL. Recommend a review of her antihypertensives and closer glucose monitoring."
)


# ----------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation between two."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    values = [v for v in values if not math.isnan(v)]  # a stream with no generated token
    return {
        "n": len(values),
        "median": statistics.median(values) if values else math.nan,
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM in KiB from /proc: no psutil needed, and VmHWM is the true peak."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def wait_port(port: int, proc: subprocess.Popen, timeout: float = 600) -> float:
    """Seconds until the port accepts connections: the server binds only once it is ready."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return time.perf_counter() - start
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


class Server:
    """`python mcp_server.py ...` as a subprocess; its log goes to bench/data/logs/."""

    def __init__(self, name: str, data: Path, summaries: Path, backend: str, *extra: str):
        self.name = name
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        cmd = [
            PY,
            str(REPO / "mcp_server.py"),
            "--port",
            str(self.port),
            "--data",
            str(data),
            "--summaries",
            str(summaries),
            "--backend",
            backend,
            "--log-level",
            "warning",
            "--max-inflight",
            "32",
            "--max-connections",
            "1024",
            *extra,
        ]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._log, env=os.environ.copy()
        )
        self.ready_s = math.nan

    async def ready(self) -> Server:
        self.ready_s = await wait_port(self.port, self.proc)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@contextlib.asynccontextmanager
async def server(name: str, data: Path, summaries: Path, backend: str, *extra: str):
    srv = Server(name, data, summaries, backend, *extra)
    try:
        await srv.ready()
        yield srv
    finally:
        srv.stop()


@contextlib.asynccontextmanager
async def fake_ollama(tps: float, tokens: int) -> AsyncIterator[str]:
    """The loopback Ollama look-alike from the tests, as its own process like the real one."""
    port = free_port()
    cmd = [PY, "-m", "tests.fake_ollama", "--port", str(port), "--tps", str(tps)]
    cmd += ["--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_port(port, proc, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def worker(*args: str) -> AsyncIterator[subprocess.Popen]:
    """This script in a helper role (echo server, pinger) in its own process."""
    cmd = [PY, str(Path(__file__).resolve()), "--worker", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


# ----------------------------------------------------------------------------- client


@dataclass
class Stream:
    """What one summarize request received, with arrival times."""

    sent: float
    done: float = math.nan  # when the final reply arrived
    times: list[float] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


class Client:
    """A lean JSON-RPC peer: replies routed by id, stream tokens timestamped on arrival."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0
        self.replies: dict[int, asyncio.Future[tuple[float, dict]]] = {}
        self.streams: dict[int, Stream] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> Client:
        return cls(await connect(url, compression=None, max_size=None, open_timeout=30))

    async def _read(self) -> None:
        loads = orjson.loads
        try:
            async for frame in self.ws:
                now = time.perf_counter()
                msg = loads(frame)
                if "method" in msg:
                    if msg["method"] == "stream_token":
                        p = msg["params"]
                        s = self.streams.get(p["request_id"])
                        if s is not None:
                            s.times.append(now)
                            s.indexes.append(p["index"])
                            s.tokens.append(p["token"])
                    continue
                fut = self.replies.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result((now, msg))
        except Exception as exc:  # the connection is gone: fail whoever still waits
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(str(exc)))

    async def call(self, method: str, params: dict | None = None) -> tuple[float, float, dict]:
        """(sent, replied, reply) with perf_counter times."""
        self._ids += 1
        rid = self._ids
        fut: asyncio.Future[tuple[float, dict]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        if method == "summarize":
            self.streams[rid] = Stream(sent=0.0)
        sent = time.perf_counter()
        if method == "summarize":
            self.streams[rid].sent = sent
        await self.ws.send(orjson.dumps(msg).decode())
        replied, reply = await asyncio.wait_for(fut, 300)
        return sent, replied, reply

    async def result(self, method: str, params: dict | None = None) -> tuple[float, dict]:
        sent, replied, reply = await self.call(method, params)
        if "result" not in reply:
            raise RuntimeError(f"{method} failed: {reply.get('error')}")
        return replied - sent, reply["result"]

    async def summarize(self, patient_id: int, max_tokens: int) -> tuple[Stream, dict]:
        _, replied, reply = await self.call(
            "summarize", {"patient_id": patient_id, "max_tokens": max_tokens}
        )
        stream = self.streams.pop(reply["id"])
        stream.done = replied
        if "result" not in reply:
            raise RuntimeError(f"summarize failed: {reply.get('error')}")
        return stream, reply["result"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def stream_figures(start: float, times: Sequence[float]) -> tuple[float, float, int]:
    """(ms to the first generated chunk, generated chunks/s, chunks) for one stream.

    The rate is taken between the first and the last generated chunk, the way the server
    reports `tokens_per_s`, so time to first token does not dilute it.
    """
    if not times:
        return math.nan, math.nan, 0
    ttft = (times[0] - start) * 1000
    span = times[-1] - times[0]
    rate = (len(times) - 1) / span if len(times) > 1 and span > 0 else math.nan
    return ttft, rate, len(times)


def check_stream(stream: Stream, result: dict) -> list[str]:
    """Everything wrong with one delivered stream: order, gaps, and the joined text."""
    problems = []
    if stream.indexes != list(range(len(stream.indexes))):
        problems.append("token indexes out of order or missing")
    if "".join(stream.tokens) != result["summary"]:
        problems.append("joined tokens differ from the summary")
    if len(stream.tokens) != result["tokens"] + 1:
        problems.append(f"{len(stream.tokens)} frames for {result['tokens']} tokens + prefill")
    return problems


# ----------------------------------------------------------------------------- queries


def unique_queries(n: int, seed: int = 7) -> list[str]:
    """Distinct, realistic queries: the query-vector cache must miss, so every search pays
    for its embedding as a new question would."""
    from clinsum.vocab import CONDITIONS

    rng = random.Random(seed)
    phrases: list[str] = []
    for cond in CONDITIONS.values():
        phrases += list(cond.synonyms) + list(cond.symptoms)
    phrases = list(dict.fromkeys(phrases))
    templates = (
        "{a}",
        "patients with {a}",
        "{a} and {b}",
        "{a} with {b}",
        "who has {a}",
        "{a} but no {b}",
        "older patients with {a}",
        "{a}, {b}",
        "history of {a}",
        "{a} on treatment",
    )
    out: dict[str, None] = {}
    while len(out) < n:
        a, b = rng.sample(phrases, 2)
        out[rng.choice(templates).format(a=a, b=b)] = None
    return list(out)


# ----------------------------------------------------------------------------- figures


@dataclass
class Row:
    """One line of the results table."""

    key: str
    figure: str
    unit: str
    server: dict[str, float] | None = None
    direct: dict[str, float] | None = None
    direct_label: str = ""
    # How the two sides are compared: "ratio" (server ÷ direct medians), "extra" (server −
    # direct medians), "paired-ratio", "relay", "paired", "p99" (see render), "" none.
    compare: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def measure_connect(url: str, n: int) -> list[float]:
    """Open a connection, send `initialize`, get the reply, close: what a new client waits."""
    init = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        }
    ).decode()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws = await connect(url, compression=None, open_timeout=30)
        await ws.send(init)
        reply = orjson.loads(await ws.recv())
        times.append((time.perf_counter() - t0) * 1000)
        assert "result" in reply, reply
        await ws.close()
    return times


async def bench_connect(srv: Server) -> Row:
    log("connect + initialize")
    async with worker("echo") as echo:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        base_url = f"ws://127.0.0.1:{port}"
        await measure_connect(base_url, 10)
        await measure_connect(srv.url, 10)
        server_t: list[float] = []
        base_t: list[float] = []
        for _ in range(N_CONNECT // 20):  # interleaved in blocks: both see the same noise
            server_t += await measure_connect(srv.url, 20)
            base_t += await measure_connect(base_url, 20)
    s = summary(server_t)
    return Row(
        "connect",
        "Connect + `initialize`",
        "ms",
        s,
        summary(base_t),
        "bare `websockets` echo server",
        "extra",
        "median < 5 ms",
        s["median"] < 5,
    )


async def bench_search(
    key: str, label: str, srv: Server, index: Any, n: int, target_ms: float
) -> list[Row]:
    log(f"search: {label}")
    queries = unique_queries(n + 20)
    warm, queries = queries[:20], queries[20:]
    client = await Client.open(srv.url)
    for q in warm:  # first torch calls are slow in any process: not what a user sees later
        await client.result("search", {"query": q, "top_k": 5})
        index.search(q, 5)
    server_t, direct_t = [], []
    for i, q in enumerate(queries):
        order = (0, 1) if i % 2 else (1, 0)
        for side in order:
            if side == 0:
                ms, _ = await client.result("search", {"query": q, "top_k": 5})
                server_t.append(ms * 1000)
            else:
                t0 = time.perf_counter()
                index.search(q, 5)
                direct_t.append((time.perf_counter() - t0) * 1000)
    # The same queries again: the query vector is cached, what is left is ranking + transport.
    cached_s, cached_d = [], []
    for q in queries[: n // 2]:
        ms, _ = await client.result("search", {"query": q, "top_k": 5})
        cached_s.append(ms * 1000)
        t0 = time.perf_counter()
        index.search(q, 5)
        cached_d.append((time.perf_counter() - t0) * 1000)
    await client.close()
    s = summary(server_t)
    return [
        Row(
            key,
            label,
            "ms",
            s,
            summary(direct_t),
            "`PatientIndex.search` in-process",
            "ratio",
            f"median < {target_ms:g} ms",
            s["median"] < target_ms,
            note="every query new to both sides, so each pays for its embedding",
        ),
        Row(
            key + "_cached",
            label + ", repeated query",
            "ms",
            summary(cached_s),
            summary(cached_d),
            "`PatientIndex.search` in-process",
            "extra",
            "–",
            note="the query vector comes from the cache: ranking, Chroma and transport only",
        ),
    ]


async def direct_stream(backend: Any, patient: Any, max_tokens: int) -> tuple[list[float], float]:
    """Chunk arrival times from `backend.stream` called in-process, and its start time."""
    from clinsum.prompt import build_messages, default_style, model_part_done, prefill

    # The server's path: the backend's default style, and the strict style's one sentence.
    style = default_style(backend.name)
    times, text = [], ""
    start = time.perf_counter()
    gen = backend.stream(
        build_messages(patient, style), prefill(patient, style), max_tokens=max_tokens
    )
    async with contextlib.aclosing(gen):
        async for chunk in gen:
            times.append(time.perf_counter())
            text += chunk
            if model_part_done(style, text):
                break
    return times, start


async def bench_relay(
    srv: Server,
    backend: Any,
    patients: Sequence[Any],
    max_tokens: int,
    label: str,
    concurrent: bool = False,
) -> tuple[Row, Row, dict[str, Any]]:
    """Server vs direct, patient by patient, with the same prompts on both sides (so each
    model's prompt cache is in the same state).

    Sequential pairs alternate which side goes first. `concurrent` runs each pair at the
    same moment instead, one model per core: a shared machine's load then falls on both
    sides alike, which is what lets a 3% difference in a model's pace be seen at all.
    """
    client = await Client.open(srv.url)
    s_ttft, s_rate, d_ttft, d_rate, s_total, d_total = [], [], [], [], [], []
    relay_ms: list[float] = []  # client-seen TTFT minus the server's own `ttft_ms`
    ping_ms: list[float] = []  # a bare round trip just before each summary, for scale
    prefill_ms: list[float] = []  # request sent to the prefill frame (index 0) back
    spans = {"server": [0, 0.0], "direct": [0, 0.0]}  # generated intervals, their seconds
    s_cpu = d_cpu = c_cpu = 0.0
    s_tok = d_tok = 0
    problems: list[str] = []

    async def via_server(p: Any) -> None:
        nonlocal s_cpu, s_tok, c_cpu
        rtt, _ = await client.result("ping")
        ping_ms.append(rtt * 1000)
        c0, cc0 = proc_cpu_s(srv.pid), time.process_time()
        stream, result = await client.summarize(p.patient_id, max_tokens)
        s_cpu += proc_cpu_s(srv.pid) - c0
        c_cpu += time.process_time() - cc0
        problems.extend(check_stream(stream, result))
        gen_times = [t for t, ix in zip(stream.times, stream.indexes, strict=True) if ix]
        ttft, rate, count = stream_figures(stream.sent, gen_times)
        s_tok += count
        s_ttft.append(ttft)
        s_rate.append(rate)
        s_total.append((stream.done - stream.sent) * 1000)
        if stream.times:
            prefill_ms.append((stream.times[0] - stream.sent) * 1000)
        if gen_times:
            relay_ms.append(ttft - result["ttft_ms"])
            spans["server"][0] += len(gen_times) - 1
            spans["server"][1] += gen_times[-1] - gen_times[0]

    async def direct(p: Any) -> None:
        nonlocal d_cpu, d_tok
        c0 = time.process_time()
        if isinstance(backend, DirectWorker):
            times, start = await backend.run(p.patient_id, max_tokens)
        else:
            times, start = await direct_stream(backend, p, max_tokens)
        d_cpu += time.process_time() - c0
        ttft, rate, count = stream_figures(start, times)
        d_tok += count
        d_ttft.append(ttft)
        d_rate.append(rate)
        d_total.append((times[-1] - start) * 1000 if times else math.nan)
        if times:
            spans["direct"][0] += len(times) - 1
            spans["direct"][1] += times[-1] - times[0]

    for i, p in enumerate(patients):
        if concurrent:
            await asyncio.gather(via_server(p), direct(p))
        elif i % 2:
            await via_server(p)
            await direct(p)
        else:
            await direct(p)
            await via_server(p)
    await client.close()
    rate_row = Row(
        f"{label}_rate",
        "",
        "tokens/s",
        summary(s_rate),
        summary(d_rate),
        "`backend.stream` in-process"
        + (" (a process of its own), at the same time" if concurrent else ""),
        "ratio",
    )
    ttft_row = Row(
        f"{label}_ttft",
        "",
        "ms",
        summary(s_ttft),
        summary(d_ttft),
        rate_row.direct_label,
        "paired",
    )
    ratios = [a / b for a, b in zip(s_rate, d_rate, strict=True) if b and not math.isnan(a)]
    pooled = {k: n / t if t else math.nan for k, (n, t) in spans.items()}
    info = {
        "pooled_rate": pooled,
        "pooled_rate_ratio": pooled["server"] / pooled["direct"],
        "relay_ttft_ms": summary(relay_ms),
        "ping_ms": summary(ping_ms),
        "prefill_frame_ms": summary(prefill_ms),
        "server_cpu_us_per_token": s_cpu / s_tok * 1e6 if s_tok else math.nan,
        "direct_cpu_us_per_token": d_cpu / d_tok * 1e6 if d_tok else math.nan,
        # This client's own cost per token received through the server (not concurrent mode)
        "client_cpu_us_per_token": c_cpu / s_tok * 1e6 if s_tok else math.nan,
        "server_tokens": s_tok,
        "direct_tokens": d_tok,
        "problems": problems,
        "paired_ttft_extra_ms": summary([a - b for a, b in zip(s_ttft, d_ttft, strict=True)]),
        "paired_rate_ratio": summary(ratios),
        "complete_ms": {"server": summary(s_total), "direct": summary(d_total)},
    }
    return rate_row, ttft_row, info


class DirectWorker:
    """`EmbeddedBackend.stream` called in-process, in a process of its own (`--worker
    embedded`), which times the chunks itself. Run at the same moment as the server's
    model, each model then has a process and a core, as the server's has; in this process
    the model's thread would hold up the client reading the server's tokens."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin, self.stdout = proc.stdin, proc.stdout

    async def ready(self) -> None:
        line = await asyncio.to_thread(self.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"embedded worker did not start: {line!r}")

    async def run(self, patient_id: int, max_tokens: int) -> tuple[list[float], float]:
        self.stdin.write(f"{patient_id} {max_tokens}\n")
        self.stdin.flush()
        reply = orjson.loads(await asyncio.to_thread(self.stdout.readline))
        return reply["times"], reply["start"]


async def bench_embedded_relay(srv: Server, patients: dict[int, Any]) -> list[Row]:
    log("streaming relay: embedded model")
    chosen = list(patients.values())[1 : 1 + N_EMBEDDED_PATIENTS]
    async with worker("embedded", str(prep.data_file(100))) as proc:
        backend = DirectWorker(proc)
        await backend.ready()
        # One untimed summary on each side: the first call evaluates the system prompt.
        await bench_relay(srv, backend, chosen[:1], 16, "warm", concurrent=True)
        rate, ttft, info = await bench_relay(
            srv, backend, chosen, EMBEDDED_MAX_TOKENS, "embedded", concurrent=True
        )
    rate.figure = "Relay throughput, embedded SmolLM2"
    rate.target = "≥ 97% of direct"
    rate.compare = "paired-ratio"
    pr = info["paired_rate_ratio"]
    rate.ok = pr["median"] >= 0.97 and not info["problems"]
    rate.note = (
        f"both sides generate the same {N_EMBEDDED_PATIENTS} summaries at the same moment, "
        "one model per process and core, so the machine's load falls on both alike; ratio = "
        "median over the summaries of (server ÷ direct) tokens/s "
        f"({info['server_tokens']} tokens a side; single ratios from {pr['min']:.2f} to "
        f"{pr['max']:.2f}, as a summary is only "
        f"~{info['server_tokens'] / N_EMBEDDED_PATIENTS:.0f} tokens and one descheduled "
        "moment moves it; all tokens ÷ all generating time, server over direct: "
        f"{info['pooled_rate_ratio']:.3f}); every token in order: "
        f"{'yes' if not info['problems'] else info['problems'][:3]}"
    )
    ttft.figure = "Relay time to first token, embedded"
    ttft.target = "< 5 ms extra"
    rate.extra = ttft.extra = info
    relay = info["relay_ttft_ms"]
    paired = info["paired_ttft_extra_ms"]
    ttft.compare = "relay"
    ttft.ok = relay["median"] < 5
    ttft.note = (
        f"extra = what the client waits beyond the server's own `ttft_ms` (frames both ways, "
        f"dispatch): median {relay['median']:.2f} ms, p95 {relay['p95']:.2f} ms, against "
        f"{info['ping_ms']['median']:.2f} ms for a bare `ping` round trip. Server − "
        f"direct for the same prompt evaluated at the same moment: median "
        f"{paired['median']:+.1f} ms, but from {paired['min']:+.0f} to {paired['max']:+.0f} ms,"
        " since prompt evaluation itself (~1-2 s on a shared core) varies by hundreds of ms; "
        "the Ollama-format rows show the relay's cost without that noise"
    )
    return [rate, ttft]


async def bench_ollama_relay(srv: Server, fake_url: str, patients: dict[int, Any]) -> list[Row]:
    from clinsum.backends.ollama import OllamaBackend

    log("streaming relay: Ollama-format source, as fast as it can push")
    backend = OllamaBackend(host=fake_url)
    chosen = list(patients.values())[:N_RELAY]
    try:
        await bench_relay(srv, backend, chosen[:2], RELAY_TOKENS, "warm")
        rate, ttft, info = await bench_relay(srv, backend, chosen, RELAY_TOKENS, "ollama")
    finally:
        await backend.aclose()
    s, d = rate.server["median"], rate.direct["median"]  # type: ignore[index]
    wall_us = (1 / s - 1 / d) * 1e6
    cpu_us = info["server_cpu_us_per_token"] - info["direct_cpu_us_per_token"]
    info["server_wall_us_per_token_extra"] = wall_us
    info["server_own_cpu_us_per_token"] = cpu_us
    rate.figure = "Relay throughput, Ollama-format source"
    rate.target = "source ≥ 5,000/s; server's cost < 50 µs/token"
    rate.ok = d >= 5000 and cpu_us < 50 and not info["problems"]
    rate.note = (
        f"server's own CPU {cpu_us:.1f} µs/token ({info['server_cpu_us_per_token']:.1f} "
        f"in the server process − {info['direct_cpu_us_per_token']:.1f} for the Ollama client "
        f"alone); wall-clock {wall_us:+.1f} µs/token. Through the server three processes "
        "share two cores (source, server, and this Python client, which itself spends "
        f"{info['client_cpu_us_per_token']:.1f} µs on each frame); the server process is the "
        "bottleneck at its total per-token CPU, of which the Ollama client library is the "
        "part the direct side pays too"
    )
    ttft.figure = "Relay time to first token, Ollama-format"
    ttft.target = "report"
    rate.extra = ttft.extra = info
    relay = info["relay_ttft_ms"]
    ttft.note = (
        f"the client sees the first generated token {relay['median']:.2f} ms (median) after "
        f"the server's own `ttft_ms`, while the prefill frame (index 0) is back "
        f"{info['prefill_frame_ms']['median']:.2f} ms after the request and a bare `ping` "
        f"takes {info['ping_ms']['median']:.2f} ms. Here the first token is followed within "
        "microseconds by hundreds more, and source, server and client are all busy on two "
        "cores; with the embedded model, at a model's pace, the same relay adds ~0.5 ms"
    )
    return [rate, ttft]


async def bench_concurrency(data: Path, summaries: Path, patients: dict[int, Any]) -> Row:
    log(f"concurrency: {CONC_SEARCH_CLIENTS} searching, {CONC_STREAMS} streaming, ping throughout")
    async with (
        fake_ollama(CONC_STREAM_TPS, CONC_STREAM_TOKENS) as fake_url,
        server("concurrency", data, summaries, "ollama", "--ollama-host", fake_url) as srv,
        worker("ping", srv.url) as pinger,
    ):
        assert pinger.stdin is not None and pinger.stdout is not None
        idle = orjson.loads(await asyncio.to_thread(pinger.stdout.readline))  # idle baseline
        searchers = [await Client.open(srv.url) for _ in range(CONC_SEARCH_CLIENTS)]
        streamers = [await Client.open(srv.url) for _ in range(CONC_STREAMS)]
        queries = unique_queries(3000, seed=11)
        stop = asyncio.Event()
        search_t: list[float] = []
        errors: list[str] = []

        async def search_loop(c: Client, k: int) -> None:
            i = k
            while not stop.is_set():
                _, replied, reply = await c.call(
                    "search", {"query": queries[i % len(queries)], "top_k": 5}
                )
                if "result" not in reply:
                    errors.append(str(reply.get("error")))
                search_t.append(replied)
                i += CONC_SEARCH_CLIENTS

        async def stream_one(c: Client, pid: int) -> list[str]:
            try:
                stream, result = await c.summarize(pid, CONC_STREAM_TOKENS)
            except RuntimeError as exc:
                return [str(exc)]
            out = check_stream(stream, result)
            if result["tokens"] != CONC_STREAM_TOKENS:
                out.append(f"{result['tokens']} tokens, expected {CONC_STREAM_TOKENS}")
            return out

        pinger.stdin.write("go\n")
        pinger.stdin.flush()
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        loops = [asyncio.create_task(search_loop(c, k)) for k, c in enumerate(searchers)]
        ids = list(patients)
        problems = await asyncio.gather(
            *(stream_one(c, ids[k % len(ids)]) for k, c in enumerate(streamers))
        )
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*loops)
        await asyncio.sleep(0.3)
        pinger.stdin.write("stop\n")
        pinger.stdin.flush()
        pings = orjson.loads(await asyncio.to_thread(pinger.stdout.readline))
        for c in searchers + streamers:
            await c.close()
    errors += [p for ps in problems for p in ps]
    rtt = summary(pings["rtt_ms"])
    own = summary(pings["own_lag_ms"])
    ok = rtt["p99"] < 20 and not errors and not pings["errors"]
    return Row(
        "concurrency",
        f"`ping` during {CONC_SEARCH_CLIENTS} searches + {CONC_STREAMS} streams",
        "ms",
        rtt,
        summary(idle["rtt_ms"]),
        "`ping` on the idle server",
        "p99",
        "p99 < 20 ms, all tokens in order, no errors",
        ok,
        note=(
            f"{len(search_t)} searches ({len(search_t) / elapsed:.0f}/s) and "
            f"{CONC_STREAMS}×{CONC_STREAM_TOKENS} tokens in {elapsed:.1f} s; "
            f"{len(errors)} errors/ordering problems; ping p99 {rtt['p99']:.1f} ms, max "
            f"{rtt['max']:.0f} ms over {rtt['n']} pings; control: the pinging process's own "
            f"timer lateness p99 {own['p99']:.1f} ms, max {own['max']:.0f} ms"
        ),
        extra={
            "errors": errors[:20],
            "searches": len(search_t),
            "seconds": elapsed,
            "pinger_own_lag_ms": own,
            "slowest_pings": sorted(zip(pings["rtt_ms"], pings["at_s"], strict=True), reverse=True)[
                :10
            ],
        },
    )


def write_summaries(path: Path, rows: int) -> None:
    """A summaries file of `rows` patients, written the way the store writes it."""
    from clinsum.store import COLUMNS

    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for i in range(1, rows + 1):
            w.writerow(
                [
                    i,
                    f"Patient {i}",
                    SUMMARY_TEXT,
                    "SmolLM2-135M-Instruct.Q4_1",
                    "2025-06-30",
                    "true",
                ]
            )
    tmp.replace(path)


async def bench_save(
    srv: Server, summaries: Path, rows: int, key: str, prewritten: bool = False
) -> Row:
    """save_summary through the server against `SummaryStore.save` on a same-size copy.

    The first save is timed apart: after start-up (`prewritten`) or after the file changed
    on disk, the store has to read the file before it can replace a row.
    """
    from clinsum.store import SummaryStore

    log(f"save_summary with {rows} rows in the file")
    client = await Client.open(srv.url)
    _, result = await client.result("summarize", {"patient_id": 5, "max_tokens": 16})
    sid = result["summary_id"]
    if not prewritten:
        write_summaries(summaries, rows)
    direct_path = RUN_DIR / f"direct_{rows}.csv"
    write_summaries(direct_path, rows)
    store = SummaryStore(direct_path)
    if prewritten:
        store.ensure_exists()  # as the server does at start-up
    first_s, _ = await client.result("save_summary", {"summary_id": sid, "force": True})
    t0 = time.perf_counter()
    store.save(5, "Janet Torres", SUMMARY_TEXT, "m", "2025-06-30", True)
    first_d = time.perf_counter() - t0
    server_t, direct_t = [], []
    for i in range(N_SAVE):
        for side in (0, 1) if i % 2 else (1, 0):
            if side == 0:
                ms, _ = await client.result("save_summary", {"summary_id": sid, "force": True})
                server_t.append(ms * 1000)
            else:
                t0 = time.perf_counter()
                store.save(5, "Janet Torres", SUMMARY_TEXT, "m", "2025-06-30", True)
                direct_t.append((time.perf_counter() - t0) * 1000)
    await client.close()
    s = summary(server_t)
    return Row(
        key,
        f"`save_summary`, {rows:,} rows in the file",
        "ms",
        s,
        summary(direct_t),
        "`SummaryStore.save` in-process",
        "ratio",
        "median < 10 ms" if rows <= 100 else "say how it grows",
        s["median"] < 10 if rows <= 100 else None,
        note=(
            f"first save {'after start-up' if prewritten else 'after the file changed on disk'}"
            f": server {first_s * 1000:.0f} ms, direct {first_d * 1000:.0f} ms; file "
            f"{summaries.stat().st_size / 1e6:.1f} MB"
        ),
        extra={"first_save_ms": {"server": first_s * 1000, "direct": first_d * 1000}},
    )


async def bench_idle_memory(srv: Server) -> dict[str, float]:
    """RSS growth per idle connection, from the second of two equal batches: the first also
    pays for allocator pools and buffers that every later connection reuses, and work that
    just finished may still be handing memory back."""
    log(f"memory per idle connection (2 x {N_IDLE_CONNECTIONS} connections)")

    async def batch() -> list[Client]:
        clients = [await Client.open(srv.url) for _ in range(N_IDLE_CONNECTIONS)]
        for c in clients:
            await c.result("ping")
        await asyncio.sleep(1.0)
        return clients

    first = await batch()
    middle = proc_status(srv.pid)["VmRSS"]
    second = await batch()
    after = proc_status(srv.pid)["VmRSS"]
    for c in first + second:
        await c.close()
    return {
        "rss_middle_kib": middle,
        "rss_after_kib": after,
        "kib_per_connection": (after - middle) / N_IDLE_CONNECTIONS,
    }


async def startup_once(name: str, data: Path, summaries: Path) -> dict[str, float]:
    """Spawn to listening, then the first summary's time to first generated token."""
    srv = Server(name, data, summaries, "embedded")
    try:
        await srv.ready()
        cpu_s = proc_cpu_s(srv.pid)
        client = await Client.open(srv.url)
        stream, _ = await client.summarize(2, 64)
        gen_times = [t for t, ix in zip(stream.times, stream.indexes, strict=True) if ix]
        t0 = time.perf_counter()
        await client.result("search", {"query": "first search after start-up", "top_k": 5})
        first_search = (time.perf_counter() - t0) * 1000
        await client.close()
        return {
            "ready_s": srv.ready_s,
            "cpu_s_at_ready": cpu_s,
            "first_ttft_ms": stream_figures(stream.sent, gen_times)[0],
            "first_search_ms": first_search,
            "peak_rss_kib": proc_status(srv.pid)["VmHWM"],
        }
    finally:
        srv.stop()


async def imports_alone() -> float:
    """Seconds for a fresh interpreter to import the libraries the server loads at start-up
    and exit: the floor under start-up that no code of ours can lower."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-c",
        "import torch, sentence_transformers, chromadb, llama_cpp, clinsum.server",
        cwd=REPO,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- workers


async def echo_worker() -> None:
    """A bare websockets server answering every frame with a fixed reply: the floor for
    connect + initialize on this machine, with none of our code in the way."""
    from websockets.asyncio.server import serve

    reply = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "x"}})

    async def handle(ws: Any) -> None:
        async for _ in ws:
            await ws.send(reply.decode())

    async with serve(handle, "127.0.0.1", 0, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def embedded_worker(data: str) -> None:
    """Serves `DirectWorker`: one line "PATIENT_ID MAX_TOKENS" in, one line of chunk times
    (perf_counter, which is the system-wide monotonic clock) out."""
    from clinsum.backends.embedded import EmbeddedBackend
    from clinsum.records import load_patients

    patients = load_patients(data)
    backend = await asyncio.to_thread(EmbeddedBackend)
    gc.freeze()
    print("ready", flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            patient_id, max_tokens = map(int, line.split())
            times, start = await direct_stream(backend, patients[patient_id], max_tokens)
            print(orjson.dumps({"times": times, "start": start}).decode(), flush=True)
    finally:
        await backend.aclose()


async def ping_worker(url: str) -> None:
    """Pings from a process of its own, so the load generator's own event loop does not
    inflate the round trips it reports. Prints the idle baseline, then the figures under
    load once told to stop."""

    async def ping_for(ws: ClientConnection, until: Callable[[], bool]) -> dict[str, list]:
        rtts: list[float] = []
        at: list[float] = []
        errors: list[str] = []
        i = 0
        start = time.perf_counter()
        while not until():
            i += 1
            t0 = time.perf_counter()
            await ws.send(f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}')
            reply = orjson.loads(await ws.recv())
            rtts.append((time.perf_counter() - t0) * 1000)
            at.append(t0 - start)
            if "result" not in reply:
                errors.append(str(reply))
            await asyncio.sleep(PING_INTERVAL_S)
        return {"rtt_ms": rtts, "at_s": at, "errors": errors}

    async with connect(url, compression=None) as ws:
        end = time.perf_counter() + 2.0
        idle = await ping_for(ws, lambda: time.perf_counter() > end)
        print(orjson.dumps(idle).decode(), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        stop = asyncio.Event()

        async def wait_stop() -> None:
            await asyncio.to_thread(sys.stdin.readline)
            stop.set()

        async def lag_probe() -> list[float]:
            # The control: how late this process's own timers fire. A ping that is late
            # because this process was not scheduled says nothing about the server.
            lags = []
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(PING_INTERVAL_S)
                lags.append((time.perf_counter() - t0 - PING_INTERVAL_S) * 1000)
            return lags

        waiter = asyncio.create_task(wait_stop())
        probe = asyncio.create_task(lag_probe())
        loaded = await ping_for(ws, stop.is_set)
        await waiter
        loaded["own_lag_ms"] = await probe
        print(orjson.dumps(loaded).decode(), flush=True)


# ----------------------------------------------------------------------------- report


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if unit == "tokens/s" or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def render(rows: Sequence[Row], meta: dict[str, Any], scalars: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta['when']} on {meta['cores']} cores ({meta['cpu']}), Python "
        f"{meta['python']}, load average {meta['loadavg_start']:.1f} at the start and "
        f"{meta['loadavg_end']:.1f} at the end (other work shares the machine), "
        f"{meta['duration_s'] / 60:.1f} min. `python bench/run.py {meta['args']}`.",
        "",
        "Through the server: a real `mcp_server.py` subprocess over loopback WebSockets. "
        "Direct: the same call in-process, interleaved request by request in the same run. "
        "Ratio = server ÷ direct (medians); extra = server − direct (medians).",
        "",
        "| figure | unit | server median | server p95 | direct median | direct p95 "
        "| ratio / extra | target | met | direct is |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | :---: | --- |",
    ]
    for r in rows:
        s, d = r.server or {}, r.direct or {}
        if r.compare == "ratio" and s and d:
            cmp = f"{s['median'] / d['median']:.2f}×"
        elif r.compare == "p99":
            cmp = f"p99 {s['p99']:.1f} ms (idle {d['p99']:.1f})"
        elif r.compare == "paired-ratio":
            cmp = f"{r.extra['paired_rate_ratio']['median']:.3f}× (paired)"
        elif r.compare == "relay":
            cmp = f"+{r.extra['relay_ttft_ms']['median']:.2f} ms"
        elif r.compare == "paired":
            cmp = f"{r.extra['paired_ttft_extra_ms']['median']:+.2f} ms (paired)"
        elif r.compare == "extra" and s and d:
            cmp = f"{s['median'] - d['median']:+.2f} {r.unit}"
        else:
            cmp = "–"
        met = {True: "yes", False: "**no**", None: "–"}[r.ok]
        lines.append(
            f"| {r.figure} | {r.unit} | {fmt(s.get('median'), r.unit)} | "
            f"{fmt(s.get('p95'), r.unit)} | {fmt(d.get('median'), r.unit)} | "
            f"{fmt(d.get('p95'), r.unit)} | {cmp} | {r.target} | {met} | {r.direct_label} |"
        )
    lines += ["", "| single figure | value | target | met |", "| --- | ---: | --- | :---: |"]
    for label, value, target, ok in scalars["lines"]:
        met = {True: "yes", False: "**no**", None: "–"}[ok]
        lines.append(f"| {label} | {value} | {target} | {met} |")
    notes = [f"- **{r.figure}**: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", *meta.get("footer", [])]
    return "\n".join(lines) + "\n"


README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def readme_table(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The few figures the original tool reported, side by side with ours, for README."""
    by_key = {r.key: r for r in rows}
    lines = [
        f"Latest `make bench` ({meta['when']}, {meta['cores']} shared cores, load average "
        f"{meta['loadavg_start']:.1f}); every figure with its direct, in-process counterpart "
        "is in [bench/results.md](bench/results.md).",
        "",
        "| what a user waits for | original tool | now, median | now, p95 | target |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    plan = [
        ("Connection (connect + `initialize`)", "1-2 s", "connect", None, "< 5 ms"),
        ("Search, 100 patients", "1-2 s", "search_100", None, "< 25 ms"),
        ("Search, 100,000 patients", "–", "search_big", None, "< 60 ms"),
        ("First token (embedded SmolLM2-135M)", "5-10 s", "embedded_ttft", None, "LLM only"),
        (
            "Complete summary (embedded, ≤ 200 tokens)",
            "35-55 s",
            "embedded_rate",
            "complete_ms",
            "LLM only",
        ),
        ("CSV write (`save_summary`), 100 rows", "< 500 ms", "save_100", None, "< 10 ms"),
        ("CSV write, 100,000 rows", "–", "save_big", None, "–"),
    ]
    for label, original, key, sub, target in plan:
        r = by_key.get(key)
        if r is None:
            continue
        fig = r.extra[sub]["server"] if sub else r.server
        assert fig is not None
        lines.append(
            f"| {label} | {original} | {fmt(fig['median'])} ms | {fmt(fig['p95'])} ms | {target} |"
        )
    return "\n".join(lines)


def update_readme(rows: Sequence[Row], meta: dict[str, Any]) -> bool:
    """Replace the block between the bench markers in README.md, so it always shows the
    latest full run; a README without the markers is left alone."""
    path = REPO / "README.md"
    text = path.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{readme_table(rows, meta)}\n{README_END}{tail}")
    return True


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> int:
    """Every section in turn, each server started fresh for it, then the report."""
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    scalars: list[tuple[str, str, str, bool | None]] = []
    raw: dict[str, Any] = {}

    small = prep.ensure_data(100)
    log("opening the 100-patient index (built once, reused)")
    raw["build_100"], patients, index = prep.ensure_index(100, log)
    gc.freeze()  # as the server does: no full collections of torch & co. mid-measurement

    big = None
    if not args.quick and (not args.only or "scale" in args.only):
        big = prep.ensure_data(args.scale)
        log(f"opening the {args.scale:,}-patient index (the first run builds it: slow)")
        raw["build_big"], big_patients, big_index = prep.ensure_index(args.scale, log)

    summaries = RUN_DIR / "summaries_embedded.csv"
    summaries.unlink(missing_ok=True)

    def want(section: str) -> bool:
        return not args.only or section in args.only

    # Start-up: several fresh servers, each to listening, then its first summary.
    starts: list[dict[str, float]] = []
    if want("startup"):
        log(f"start-up x{N_STARTUPS}, embedded backend, existing index")
        floor: list[float] = []
        for i in range(N_STARTUPS):
            starts.append(await startup_once(f"startup{i}", small, summaries))
            floor.append(await imports_alone())
        raw["startup_100"] = starts
        raw["imports_alone_s"] = floor
        ready_s = summary([s["ready_s"] for s in starts])
        rows.append(
            Row(
                "startup",
                "Start-up to ready, 100 patients, existing index",
                "s",
                ready_s,
                summary(floor),
                "importing torch, sentence-transformers, chromadb, llama_cpp alone",
                "ratio",
                "< 8 s",
                ready_s["median"] < 8,
                note=(
                    f"CPU seconds at ready: "
                    f"{statistics.median(s['cpu_s_at_ready'] for s in starts):.1f} (median); "
                    f"n = {N_STARTUPS}"
                ),
            )
        )

    idle: dict[str, float] = {}
    peak_100 = None
    if any(map(want, ("connect", "search", "embedded", "memory"))):
        async with server("embedded100", small, summaries, "embedded") as srv:
            if want("connect"):
                rows.append(await bench_connect(srv))
            if want("search"):
                n_search = N_SEARCH_QUICK if args.quick else N_SEARCH
                rows += await bench_search(
                    "search_100", "Search, 100 patients", srv, index, n_search, 25
                )
            if want("embedded"):
                rows += await bench_embedded_relay(srv, patients)
            if want("memory"):
                idle = await bench_idle_memory(srv)
                raw["idle_memory"] = idle
            peak_100 = proc_status(srv.pid)["VmHWM"]

    if want("concurrency"):
        # Before the save figures: their fsyncs of a 32 MB file leave the kernel flushing for
        # a while, and a stalled ping would then measure the disk, not the event loop.
        rows.append(await bench_concurrency(small, RUN_DIR / "summaries_conc.csv", patients))

    if want("ollama") or want("save"):
        ollama_summaries = RUN_DIR / "summaries_ollama.csv"
        write_summaries(ollama_summaries, 100)
        async with fake_ollama(0, RELAY_TOKENS) as fake_url:
            async with server(
                "ollama100", small, ollama_summaries, "ollama", "--ollama-host", fake_url
            ) as srv:
                if want("ollama"):
                    rows += await bench_ollama_relay(srv, fake_url, patients)
                if want("save"):
                    rows.append(await bench_save(srv, ollama_summaries, 100, "save_100"))
                    rows.append(await bench_save(srv, ollama_summaries, 10_000, "save_10k"))
            if want("save"):
                # A fresh server on a file that already has the rows: its first save is the
                # one a user makes first after start-up.
                big_saves = RUN_DIR / "summaries_big_save.csv"
                write_summaries(big_saves, SAVE_BIG_ROWS)
                async with server(
                    "save_big", small, big_saves, "ollama", "--ollama-host", fake_url
                ) as srv:
                    rows.append(
                        await bench_save(srv, big_saves, SAVE_BIG_ROWS, "save_big", prewritten=True)
                    )

    by_key = {r.key: r for r in rows}
    if "save_100" in by_key and "save_big" in by_key:
        small_ms = by_key["save_100"].server["median"]  # type: ignore[index]
        big_ms = by_key["save_big"].server["median"]  # type: ignore[index]
        per_row_us = (big_ms - small_ms) / (SAVE_BIG_ROWS - 100) * 1000
        by_key["save_big"].note += (
            f". Growth: linear, ~{per_row_us:.2f} µs per row ({per_row_us * 1000 / 330:.1f} ms "
            "per MB): every save writes the whole file to a temporary file, fsyncs it and "
            "renames it over the old one, which is what lets a crash leave the old file or the "
            "new one and nothing in between"
        )
        raw["save_us_per_row"] = per_row_us

    big_start = None
    if big is not None and want("scale"):
        gc.freeze()
        big_summaries = RUN_DIR / "summaries_big.csv"
        big_start = await startup_once("startup_big", big, big_summaries)
        raw["startup_big"] = big_start
        async with server("embedded_big", big, big_summaries, "embedded") as srv:
            rows += await bench_search(
                "search_big", f"Search, {args.scale:,} patients", srv, big_index, N_SEARCH, 60
            )
            big_peak = proc_status(srv.pid)["VmHWM"]
        raw["peak_rss_big_kib"] = big_peak
        del big_index, big_patients

    # ------------------------------------------------------------------ single figures
    if starts:
        first_ttft = summary([s["first_ttft_ms"] for s in starts])
        first_search = summary([s["first_search_ms"] for s in starts])
        scalars.append(
            (
                "First summary after start-up: time to first generated token",
                f"{first_ttft['median']:.0f} ms (max {first_ttft['max']:.0f}, n = {N_STARTUPS})",
                "report",
                None,
            )
        )
        scalars.append(
            (
                "First search after start-up",
                f"{first_search['median']:.0f} ms (max {first_search['max']:.0f})",
                "report",
                None,
            )
        )
    if big_start is not None:
        scalars.append(
            (
                f"Start-up to ready, {args.scale:,} patients, existing index",
                f"{big_start['ready_s']:.2f} s",
                "< 8 s",
                big_start["ready_s"] < 8,
            )
        )
    if "build_big" in raw:
        b = raw["build_big"]
        scalars.append(
            (
                f"Index build, {b['patients']:,} patients, {b['cores']} cores",
                f"{b['rate_per_s']:,.0f} patients/s ({b['open_s'] / 60:.1f} min, "
                f"{b['rate_per_cpu_s']:,.0f} per CPU-second; built {b['when']}, "
                f"load avg {b['loadavg_before']:.1f})",
                "report",
                None,
            )
        )
    if peak_100 is not None:
        scalars.append(
            (
                "Peak RSS, embedded model + 100-patient index",
                f"{peak_100 / 1024:.0f} MiB",
                "< 1 GiB",
                peak_100 < 1024 * 1024,
            )
        )
    if "peak_rss_big_kib" in raw:
        pk = raw["peak_rss_big_kib"]
        scalars.append(
            (
                f"Peak RSS, embedded model + {args.scale:,}-patient index",
                f"{pk / 1024:.0f} MiB",
                "< 1 GiB",
                pk < 1024 * 1024,
            )
        )
    if idle:
        scalars.append(
            (
                "Extra memory per idle connection",
                f"{idle['kib_per_connection']:.0f} KiB (RSS growth over a second batch of "
                f"{N_IDLE_CONNECTIONS} connections)",
                "report",
                None,
            )
        )

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg()[0],
        "duration_s": time.perf_counter() - t_start,
        "args": " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows, meta, {"lines": scalars}))
    payload = {
        "meta": meta,
        "rows": [r.__dict__ for r in rows],
        "single": [{"figure": a, "value": b, "target": c, "met": d} for a, b, c, d in scalars],
        "raw": raw,
    }
    out.with_suffix(".json").write_text(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    )
    log(f"wrote {out} and {out.with_suffix('.json')} in {meta['duration_s'] / 60:.1f} min")
    full_run = not args.only and not args.quick and out.resolve() == DEFAULT_OUT.resolve()
    if full_run and update_readme(rows, meta):
        log("updated the table in README.md")
    print(out.read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=int, default=100_000, help="patients in the scale test (default 100000)"
    )
    parser.add_argument("--quick", action="store_true", help="skip the scale test")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report (and .json)")
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        help="comma-separated sections, for working on one figure: startup, connect, search, "
        "embedded, memory, ollama, save, concurrency, scale",
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        role, *rest = args.worker
        if role == "echo":
            asyncio.run(echo_worker())
        elif role == "ping":
            asyncio.run(ping_worker(rest[0]))
        elif role == "embedded":
            asyncio.run(embedded_worker(rest[0]))
        return 0
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
