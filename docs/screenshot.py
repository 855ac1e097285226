"""Retake docs/web.png, the README's picture of the page: a real server with the embedded
model, Debian's chromium at 1280 px, a patient opened and summarized.

    python docs/screenshot.py   # from the repository root, after `make setup`
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit.processes import ServerProcess, free_port  # noqa: E402
from testkit.web import launch_chromium  # noqa: E402

QUERY = "diabetes"
OUT = REPO / "docs" / "web.png"


def main() -> int:
    folder = Path(tempfile.mkdtemp())
    shutil.copy(REPO / "patient_data.csv", folder / "patient_data.csv")
    http = free_port()
    args = ["--backend", "embedded", "--data", str(folder / "patient_data.csv")]
    args += ["--summaries", str(folder / "patient_summaries.csv"), "--http-port", str(http)]
    server = ServerProcess(args).wait_ready()
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{server.http_url}/")
            expect(page.locator("#conn")).to_contain_text("Connected", timeout=60_000)
            box = page.get_by_role("searchbox", name="Search patients")
            box.fill(QUERY)
            box.press("Enter")
            expect(page.locator("#search-status")).to_contain_text("found")
            page.locator("#hits button").first.click()
            expect(page.locator('svg[aria-label^="Blood pressure"]')).to_have_attribute(
                "aria-label", re.compile("now")
            )
            page.get_by_role("button", name="Summarize").click()
            summary = page.get_by_role("textbox", name="Summary", exact=True)
            expect(summary).not_to_have_value("", timeout=120_000)
            page.wait_for_timeout(500)
            page.screenshot(path=OUT, full_page=True)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
