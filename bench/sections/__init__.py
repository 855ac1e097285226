"""Every benchmark section, in the order a full run measures them: one registry, as `TOOLS`
is for the tools. A section is a module with `async def run(ctx) -> list[Row]`; adding one
is a module here plus one `Section(...)` line below.

The order matters: sections that share a server (`shares`) sit next to each other, so it is
started once; `memory` comes last on the embedded server, so its peak RSS is the run's; and
`concurrency` runs before `save`, whose fsyncs of a 32 MB file leave the kernel flushing for
a while (a stalled ping would then measure the disk, not the event loop).
"""

from __future__ import annotations

import functools

from bench.harness import Section

from . import (
    concurrency,
    connect,
    faces,
    failover,
    memory,
    metrics,
    model_process,
    relay,
    save,
    scale,
    search,
    search_quality,
    startup,
    steer,
)

FACES = ("faces100",)  # the embedded model with the WebSocket and HTTP faces on


def relay_on(face: str) -> functools.partial:
    """The relay section through `face` ("ws", "http" or "stdio")."""
    return functools.partial(relay.run, face=face)


SECTIONS: dict[str, Section] = {
    s.name: s
    for s in (
        Section("startup", startup.run, "fresh servers to ready, first summary and search"),
        Section("connect", connect.run, "connect + initialize", ("embedded100",)),
        Section("search", search.run, "search, 100 patients", ("embedded100",)),
        Section("relay", relay.run, "tokens/s through the server, embedded", ("embedded100",)),
        Section("memory", memory.run, "per idle connection; peak RSS", ("embedded100",)),
        Section("faces", faces.run_connect, "connect + initialize + tools/list, each face", FACES),
        Section("search_http", faces.run_search, "search: MCP over HTTP vs WebSocket", FACES),
        Section("relay_http", relay_on("http"), "tokens/s through MCP over HTTP", FACES),
        Section("relay_stdio", relay_on("stdio"), "tokens/s through MCP over stdio"),
        Section("metrics", metrics.run, "/metrics scrape while 20 summaries stream"),
        Section("concurrency", concurrency.run, "ping under 100 searches + 20 streams"),
        Section("relay_ollama", relay.run_ollama, "relay cost per token", ("ollama100",)),
        Section("save", save.run, "save_summary, 100 to 100,000 rows", ("ollama100",)),
        Section("stores", save.run_stores, "save_summary: CSV vs PostgreSQL", ("ollama100",)),
        Section(
            "failover", failover.run, "two replicas behind HAProxy: drafts, kill -9", ("ollama100",)
        ),
        Section("search_quality", search_quality.run, "precision beside pure vector and BM25"),
        Section("model_workers", model_process.run, "aggregate tok/s, 1 vs 2 model processes"),
        Section("steer", steer.run, "first token with and without the per-patient biases"),
        Section("scale", scale.run, "--scale patients", quick=False),
    )
}
