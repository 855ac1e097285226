"""What every benchmark section shares: the server process, statistics, rows and the report.

A section (`bench/sections/`) measures one figure through a real `mcp_server.py` and, where
it makes sense, directly in this process, and returns `Row`s; `bench/run.py` picks the
sections and writes what they return with `render` (bench/results.md) and `readme_table`.

`ServerProcess`, the JSON-RPC peers and the fake Ollama come from `testkit/`, which the tests
share: one way to start, wait for and stop a server, whoever runs it. `summarize` here turns
a `testkit/rpc.py` peer's timestamped notes into a `Stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testkit.rpc import _Routing as AnyPeer

from bench.prep import DATA_DIR, REPO
from testkit.processes import ServerProcess, free_port, port_open

RUN_DIR = DATA_DIR / "run"
LOG_DIR = DATA_DIR / "logs"
DEFAULT_OUT = REPO / "bench" / "results.md"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

OLLAMA_TOKENS = 1024  # what the fake Ollama sends a summary: the summarize limit
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
    """n, median, p95, p99, min and max; NaNs (a stream with no generated token) left out."""
    values = [v for v in values if not math.isnan(v)]
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


def start_server(
    name: str, data: Path, summaries: Path, backend: str, *extra: str
) -> ServerProcess:
    """A server as the benchmark runs it: quiet (per-request log lines cost time), limits
    raised above what any section sends, its log in bench/data/logs/NAME.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    args = bench_flags(data, summaries, backend, *extra)
    return ServerProcess(args, log_path=LOG_DIR / f"{name}.log")


def bench_flags(data: Path, summaries: Path, backend: str, *extra: str) -> list[str]:
    """The flags of every benchmarked server (`--stdio` children too)."""
    return [
        *("--data", str(data), "--summaries", str(summaries), "--backend", backend),
        *("--log-level", "warning", "--max-inflight", "32", "--max-connections", "1024"),
        *extra,
    ]


@contextlib.asynccontextmanager
async def server(
    name: str, data: Path, summaries: Path, backend: str, *extra: str
) -> AsyncIterator[ServerProcess]:
    """`start_server`, ready; stopped on exit."""
    srv = start_server(name, data, summaries, backend, *extra)
    try:
        await asyncio.to_thread(srv.wait_ready, 600)
        yield srv
    finally:
        srv.stop(15)


@contextlib.asynccontextmanager
async def fake_ollama(tps: float, tokens: int) -> AsyncIterator[str]:
    """The loopback Ollama look-alike from the tests, as its own process like the real one."""
    port = free_port()
    cmd = [PY, "-m", "testkit.fake_ollama", "--port", str(port), "--tps", str(tps)]
    cmd += ["--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake Ollama did not listen on {port}")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def worker(*args: str) -> AsyncIterator[subprocess.Popen]:
    """A helper process (`bench/workers.py`: echo server, pinger, direct model), talked to
    through its stdin and stdout."""
    cmd = [PY, "-m", "bench.workers", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


# ----------------------------------------------------------------------------- streams


_tokens = itertools.count(1)  # progress tokens, unique within a run


@dataclass
class Stream:
    """What one summarize request received, with arrival times (perf_counter)."""

    sent: float
    done: float = math.nan  # when the final reply arrived
    times: list[float] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


async def result(peer: AnyPeer, method: str, params: dict | None = None) -> tuple[float, Any]:
    """(seconds from send to reply, result).

    Raises:
        RuntimeError: the reply is an error.
    """
    sent, replied, reply = await peer.timed(method, params)
    if "result" not in reply:
        raise RuntimeError(f"{method} failed: {reply.get('error')}")
    return replied - sent, reply["result"]


async def summarize(
    peer: AnyPeer, patient_id: int, max_tokens: int, mcp: bool = False
) -> tuple[Stream, dict]:
    """One summary through `peer`, its token notes taken off the peer: the plain `summarize`
    with `stream_token`s, or (`mcp`) `tools/call` with one `notifications/progress` a token,
    as every MCP face sends them. Returns the stream and the summarize result.

    Raises:
        RuntimeError: the reply is an error (or, over MCP, an `isError` result).
    """
    args = {"patient_id": patient_id, "max_tokens": max_tokens}
    if mcp:
        token = f"bench-{next(_tokens)}"
        params = {"name": "summarize", "arguments": args, "_meta": {"progressToken": token}}
        sent, replied, reply = await peer.timed("tools/call", params)
    else:
        sent, replied, reply = await peer.timed("summarize", args)
    rid = reply["id"]
    stream = Stream(sent=sent, done=replied)
    rest = []
    for t, msg in peer.notes:
        p = msg.get("params") or {}
        if not mcp and msg["method"] == "stream_token" and p.get("request_id") == rid:
            stream.times.append(t)
            stream.indexes.append(p["index"])
            stream.tokens.append(p["token"])
        elif mcp and msg["method"] == "notifications/progress" and p.get("progressToken") == token:
            stream.times.append(t)
            stream.indexes.append(int(p["progress"]) - 1)
            stream.tokens.append(p.get("message", ""))
        else:
            rest.append((t, msg))
    peer.notes[:] = rest
    res = reply.get("result")
    if res is None or (mcp and res.get("isError")):
        raise RuntimeError(f"summarize failed: {reply.get('error') or res}")
    return stream, res["structuredContent"] if mcp else res


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


# ----------------------------------------------------------------------------- inputs


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


# ----------------------------------------------------------------------------- sections


@dataclass
class Row:
    """One line of the results table, or, with `value`, of the single-figures table."""

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
    value: str | None = None  # a single figure, already written out


def single(
    key: str, figure: str, value: str, target: str = "report", ok: bool | None = None
) -> Row:
    """A figure with no direct counterpart: one line of the second table."""
    return Row(key, figure, "", target=target, ok=ok, value=value)


@dataclass
class Served:
    """A server some sections share, and the LLM it talks to (None: the embedded model)."""

    server: ServerProcess
    llm_url: str | None = None


@dataclass
class Context:
    """What `run.py` hands every section: the options, the 100-patient data with its index
    opened in this process (the direct side), where raw figures go, and the shared servers.

    Consecutive sections that name the same server in `Section.shares` run on one process,
    started by the first and stopped before a section that does not share it.
    """

    quick: bool
    scale: int
    small: Path  # the 100-patient CSV
    patients: dict[int, Any]
    index: Any  # clinsum.search.PatientIndex over `small`
    raw: dict[str, Any] = field(default_factory=dict)  # goes into results.json as is
    shared_servers: dict[str, Served] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def shared(self, name: str) -> Served:
        """The shared server `name` (see SHARED), started on first use."""
        if name not in self.shared_servers:
            self.shared_servers[name] = await self._stack.enter_async_context(SHARED[name](self))
        return self.shared_servers[name]

    async def release(self, keep: Sequence[str] = ()) -> None:
        """Stop every shared server unless all of them are in `keep`."""
        if set(self.shared_servers) - set(keep):
            await self._stack.aclose()
            self.shared_servers.clear()
            self._stack = contextlib.AsyncExitStack()


@contextlib.asynccontextmanager
async def _embedded100(ctx: Context) -> AsyncIterator[Served]:
    summaries = RUN_DIR / "summaries_embedded.csv"
    async with server("embedded100", ctx.small, summaries, "embedded") as srv:
        yield Served(srv)


@contextlib.asynccontextmanager
async def _ollama100(ctx: Context) -> AsyncIterator[Served]:
    """A fake Ollama as fast as it can push (`OLLAMA_TOKENS` a summary), and a server on it
    whose summaries file starts with 100 rows."""
    summaries = RUN_DIR / "summaries_ollama.csv"
    write_summaries(summaries, 100)
    async with (
        fake_ollama(0, OLLAMA_TOKENS) as url,
        server("ollama100", ctx.small, summaries, "ollama", "--ollama-host", url) as srv,
    ):
        yield Served(srv, url)


@contextlib.asynccontextmanager
async def _faces100(ctx: Context) -> AsyncIterator[Served]:
    """The embedded model with every network face on: WebSocket and HTTP."""
    summaries = RUN_DIR / "summaries_faces.csv"
    http = str(free_port())
    async with server("faces100", ctx.small, summaries, "embedded", "--http-port", http) as srv:
        yield Served(srv)


SHARED: dict[str, Callable[[Context], contextlib.AbstractAsyncContextManager[Served]]] = {
    "embedded100": _embedded100,
    "ollama100": _ollama100,
    "faces100": _faces100,
}


@dataclass(frozen=True)
class Section:
    """One figure (or a few from one measurement): `run(ctx)` returns its rows."""

    name: str
    run: Callable[[Context], Awaitable[list[Row]]]
    help: str
    shares: tuple[str, ...] = ()  # names in SHARED it runs on
    quick: bool = True  # also part of `--quick`


# ----------------------------------------------------------------------------- report


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if unit == "tokens/s" or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _compare(r: Row) -> str:
    s, d = r.server or {}, r.direct or {}
    if r.compare == "ratio" and s and d:
        return f"{s['median'] / d['median']:.2f}×"
    if r.compare == "p99":
        return f"p99 {s['p99']:.1f} ms (idle {d['p99']:.1f})"
    if r.compare == "paired-ratio":
        return f"{r.extra['paired_rate_ratio']['median']:.3f}× (paired)"
    if r.compare == "relay":
        return f"+{r.extra['relay_ttft_ms']['median']:.2f} ms"
    if r.compare == "paired":
        return f"{r.extra['paired_ttft_extra_ms']['median']:+.2f} ms (paired)"
    if r.compare == "extra" and s and d:
        return f"{s['median'] - d['median']:+.2f} {r.unit}"
    return "–"


def _met(ok: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[ok]


def render(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """bench/results.md: every figure beside its direct counterpart, then single figures."""
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
        if r.value is not None:
            continue
        s, d = r.server or {}, r.direct or {}
        lines.append(
            f"| {r.figure} | {r.unit} | {fmt(s.get('median'), r.unit)} | "
            f"{fmt(s.get('p95'), r.unit)} | {fmt(d.get('median'), r.unit)} | "
            f"{fmt(d.get('p95'), r.unit)} | {_compare(r)} | {r.target} | {_met(r.ok)} | "
            f"{r.direct_label} |"
        )
    lines += ["", "| single figure | value | target | met |", "| --- | ---: | --- | :---: |"]
    for r in rows:
        if r.value is not None:
            lines.append(f"| {r.figure} | {r.value} | {r.target} | {_met(r.ok)} |")
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
        ("Search, 100,000 patients", "–", "search_big", None, "< 25 ms"),
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
