"""What `/metrics` reports: the instruments, one set per `App`, in Prometheus' text format.

Rule 1: the tool path feeds these in one place (`Tool.run` and the generation loop in
`tools.py`), so a request counts the same whichever face it came through; a face only
registers how many connections and sessions it holds right now.
Rule 2: each `App` has its own `CollectorRegistry`, never the process-wide default, so two
apps in one test process (or one test after another) never see each other's counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# `*_created` series (one per counter, histogram and label set) would double every scrape;
# the server's start time is not worth that. This is process-wide, like the setting itself.
disable_created_metrics()

# The classic text format every Prometheus scraper reads; prometheus_client's "latest" is
# the 1.0.0 format, which older scrapers refuse.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# A search is 5-25 ms on 100 or 100,000 patients (bench/results.md, bench/scale.md).
SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A summary is 1-2 s on the embedded model, tens of seconds on a slow one or in a queue.
SUMMARY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

OUTCOMES = ("ok", "error", "cancelled", "internal_error")


class Metrics:
    """The instruments of one running `App`, and their exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clinsum_requests",
            "Tool calls by tool and outcome (ok, error: a result the caller can act on, "
            "cancelled, internal_error), whichever face they came through.",
            ("method", "outcome"),
            registry=r,
        )
        self.tokens = Counter(
            "clinsum_tokens_generated", "Tokens the model generated for summaries.", registry=r
        )
        self.search_seconds = Histogram(
            "clinsum_search_seconds",
            "Time to answer a successful search.",
            buckets=SEARCH_BUCKETS,
            registry=r,
        )
        self.summary_seconds = Histogram(
            "clinsum_summary_seconds",
            "Time to generate and check a successful summary, queueing included.",
            buckets=SUMMARY_BUCKETS,
            registry=r,
        )
        self.connections = Gauge(
            "clinsum_open_connections",
            "Open client connections by face (ws: WebSocket connections; http: HTTP "
            "connections, keep-alive included).",
            ("face",),
            registry=r,
        )
        self.sessions = Gauge(
            "clinsum_open_sessions",
            "Open sessions by face (ws: one per connection; http: one per Mcp-Session-Id).",
            ("face",),
            registry=r,
        )
        self.model_queue = Gauge(
            "clinsum_model_queue_length",
            "Summaries waiting for the model's first token (queued behind others or in "
            "prompt evaluation).",
            registry=r,
        )
        self._latency = {"search": self.search_seconds, "summarize": self.summary_seconds}

    def latency(self, method: str) -> Histogram | None:
        """The histogram a successful call of `method` is timed in, if any."""
        return self._latency.get(method)

    def watch(self, face: str, connections: Callable[[], int], sessions: Callable[[], int]) -> None:
        """Report `face`'s open connections and sessions, read at each scrape."""
        self.connections.labels(face=face).set_function(connections)
        self.sessions.labels(face=face).set_function(sessions)

    def exposition(self) -> bytes:
        """The current values in the text format served as `CONTENT_TYPE`."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "OUTCOMES", "Metrics"]
