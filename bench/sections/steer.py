"""Steering's cost: the first token and the whole strict summary with the per-patient logit
biases (`steering.steer`) against the same generation without them, side by side, the model
in this process (`runner.Model`, as the model process runs it), interleaved patient by
patient. The biases' own cost is looking up first tokens (cached per word) and llama.cpp
adding a few hundred more biases at every sampled token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from bench.harness import Context, Row, log, summary

N_PATIENTS = 30


def measure(patients: list, model_threads: int) -> dict[str, list[float]]:
    from clinsum.backends.base import DEFAULT_SETTINGS
    from clinsum.backends.embedded import default_model_path
    from clinsum.backends.runner import Model, Request, Settings
    from clinsum.prompt import build_messages, model_part_done, prefill
    from clinsum.steering import NO_STEER, steer

    model = Model(str(default_model_path()), model_threads, Settings.of(asdict(DEFAULT_SETTINGS)))
    out: dict[str, list[float]] = {"ttft_on": [], "ttft_off": [], "whole_on": [], "whole_off": []}
    try:
        for i, patient in enumerate(patients):
            sides = [("on", steer(patient)), ("off", NO_STEER)]
            for side, s in sides if i % 2 else sides[::-1]:
                request = Request(1, build_messages(patient), prefill(patient), 60, s.avoid, s.keep)
                text, first = "", None
                start = time.perf_counter()

                def send(chunk: str, request: Request = request) -> None:
                    nonlocal text, first
                    first = first or time.perf_counter()
                    text += chunk
                    if model_part_done("strict", text):
                        request.cancelled.set()

                model.generate(request, send)
                end = time.perf_counter()
                out[f"ttft_{side}"].append(((first or end) - start) * 1000)
                out[f"whole_{side}"].append((end - start) * 1000)
    finally:
        model.close()
    return out


async def run(ctx: Context) -> list[Row]:
    from clinsum.backends.embedded import EmbeddedBackend
    from clinsum.records import formats

    log(f"steering: {N_PATIENTS} strict summaries with and without the per-patient biases")
    patients = list(formats.load(ctx.small).patients.values())[:N_PATIENTS]
    threads = EmbeddedBackend().threads
    got = await asyncio.to_thread(measure, patients, threads)
    ctx.raw["steer"] = got
    note = f"{N_PATIENTS} patients, each with and without, alternating which goes first"
    rows = []
    for key, figure in (
        ("ttft", "Strict summary's first token, with the per-patient biases"),
        ("whole", "Strict summary's model part, whole, with the per-patient biases"),
    ):
        on, off = summary(got[f"{key}_on"]), summary(got[f"{key}_off"])
        rows.append(
            Row(
                f"steer_{key}",
                figure,
                "ms",
                on,
                off,
                "the same without them",
                compare="ratio",
                target="≤ 1.10×",
                ok=on["median"] <= 1.1 * off["median"],
                note=note,
            )
        )
    return rows
