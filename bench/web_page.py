"""The web page's figures (issue #13), measured in Debian's chromium through Playwright.

    python bench/web_page.py                # prints a Markdown table
    python bench/web_page.py --json out.json

- First paint: `first-contentful-paint` of `/` over loopback, in a new tab (which starts a
  renderer process) and on a reload with the cache off.
- Page weight: the bytes of every response the load fetched (page, scripts, style, favicon,
  /config.json), as the HTTP face sent them.
- Token to DOM: for each `stream_token`, from the server's send (the clock read just before
  `StreamEvents.token` sends the frame, in this process) to the page's `performance.mark`
  after the text node grew. Both are wall-clock times of this machine, compared in ms.

The server is the real WebSocket and HTTP faces in this process (testkit/web.py) with a
fake Ollama at a fixed pace, on the repository's patient_data.csv (its index is built if
missing). Targets: first paint <= 300 ms, weight <= 200 KB, token to DOM p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.harness import log, summary  # noqa: E402
from clinsum.mcp import StreamEvents  # noqa: E402
from testkit.inprocess import OllamaThread  # noqa: E402
from testkit.web import PageServer, launch_chromium  # noqa: E402

N_LOADS = 10
N_SUMMARIES = 5
TOKENS = 100  # per summary: 500 token frames in all
TPS = 50  # about a real small model's pace on these machines
QUERY = "diabetes"

_sent: dict[int, float] = {}  # token index -> epoch ms just before the send


def _record_sends() -> None:
    """Wrap the plain face's `stream_token` send to note when each one leaves the server."""
    send = StreamEvents.token

    async def token(self: StreamEvents, index: int, text: str) -> None:
        _sent[index] = time.time() * 1000
        await send(self, index, text)

    StreamEvents.token = token  # type: ignore[method-assign]


def _connected(page: Any) -> None:
    # A locator, not wait_for_function: the page's CSP forbids the eval that one needs.
    page.locator("#conn", has_text="Connected").wait_for()


def _fcp(page: Any) -> float:
    return float(
        page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
    )


def first_paints(browser: Any, url: str) -> dict[str, Any]:
    """First-contentful-paint of N_LOADS loads in a new tab each (a new renderer process,
    as a user opening the page gets) and of N_LOADS reloads with the cache off (the page's
    own cost); the bytes and files of a load."""
    new_tab: list[float] = []
    sizes: dict[str, int] = {}
    for i in range(N_LOADS + 1):  # the first load warms chromium up and is not counted
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sizes.clear()
        page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
        page.goto(url, wait_until="load")
        _connected(page)
        if i:
            new_tab.append(_fcp(page))
        context.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.context.new_cdp_session(page).send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.goto(url)
    reload: list[float] = []
    for _ in range(N_LOADS):
        page.reload(wait_until="load")
        _connected(page)
        reload.append(_fcp(page))
    page.close()
    return {
        "first_paint_new_tab_ms": summary(new_tab),
        "first_paint_reload_ms": summary(reload),
        "page_weight_bytes": sum(sizes.values()),
        "files": sorted(u.removeprefix(url.rstrip("/")) for u in sizes),
    }


def token_to_dom(browser: Any, url: str) -> list[float]:
    """Milliseconds from each token's send to its DOM update, over N_SUMMARIES summaries."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    _connected(page)
    search = page.get_by_role("searchbox", name="Search patients")
    search.fill(QUERY)
    search.press("Enter")
    page.locator("#hits button").first.click()
    page.locator("#chart-bp svg").wait_for()
    delays: list[float] = []
    for _ in range(N_SUMMARIES):
        _sent.clear()
        page.get_by_role("button", name="Summarize").click()
        page.get_by_role("textbox", name="Summary", exact=True).wait_for(timeout=60_000)
        marks = page.evaluate(
            """performance.getEntriesByName("clinsum:token")
                 .map((m) => [m.detail, performance.timeOrigin + m.startTime])"""
        )
        delays += [at - _sent[i] for i, at in marks if i in _sent]
    page.close()
    return delays


def measure() -> dict[str, Any]:
    _record_sends()
    static = REPO / "clinsum" / "web" / "static"
    with (
        tempfile.TemporaryDirectory() as tmp,
        OllamaThread(tps=TPS, n_tokens=TOKENS) as ollama,
        PageServer(REPO, Path(tmp) / "summaries.csv", ollama.url) as srv,
        sync_playwright() as p,
    ):
        browser = launch_chromium(p)
        log(f"page at {srv.url}; {N_LOADS} loads")
        loads = first_paints(browser, srv.url)
        log(f"{N_SUMMARIES} summaries of {TOKENS} tokens at {TPS} tok/s")
        delays = token_to_dom(browser, srv.url)
        browser.close()
    return {
        **loads,
        "static_files_bytes": sum(f.stat().st_size for f in static.iterdir()),
        "token_to_dom_ms": summary(delays),
        "chromium": "/usr/bin/chromium",
    }


def render(r: dict[str, Any]) -> str:
    tab, reload, td = (
        r["first_paint_new_tab_ms"],
        r["first_paint_reload_ms"],
        r["token_to_dom_ms"],
    )
    return "\n".join(
        [
            "| figure | median | p95 | target |",
            "| --- | --- | --- | --- |",
            f"| first paint, new tab (ms, n={tab['n']}) | {tab['median']:.0f} | "
            f"{tab['p95']:.0f} | ≤ 300 |",
            f"| first paint, reload with the cache off (ms, n={reload['n']}) | "
            f"{reload['median']:.0f} | {reload['p95']:.0f} | ≤ 300 |",
            f"| page weight, every response of a load (KB) | {r['page_weight_bytes'] / 1024:.1f}"
            " | | ≤ 200 |",
            f"| server send of a token → DOM update (ms, n={td['n']}) | {td['median']:.1f} | "
            f"{td['p95']:.1f} | p95 ≤ 50 |",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    results = measure()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = (
        results["first_paint_new_tab_ms"]["median"] <= 300
        and results["page_weight_bytes"] <= 200 * 1024
        and results["token_to_dom_ms"]["p95"] <= 50
    )
    if not ok:
        log("a figure misses its target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
