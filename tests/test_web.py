"""The clinicians' web page in a real browser: Debian's chromium driven by Playwright.

One server for the module (the WebSocket face and the page, `testkit.web.PageServer`), with a
fake Ollama at a known speed so the summary streams visibly. The data is a small copy of
patient_data.csv whose last patient is named like an HTML injection.
Screenshots at 360 and 1280 px go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from clinsum.digest import digest
from clinsum.records import formats, load_patients
from testkit.inprocess import OllamaThread
from testkit.web import PageServer, launch_chromium

from .conftest import DATA, ServerProcess, server_args

NO_VITALS = Path(__file__).parent / "data" / "no_vitals.csv"
UNMEASURED = ("206", "208")  # visits alternately without BP or sugar; nothing measured at all

HOSTILE = "<img src=x onerror=alert(1)>"
TOKEN = "web-test-token-\u00e9"  # not ASCII: the subprotocol carries it base64url-encoded
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TPS = 20  # the fake model's speed: a 30-token summary takes 1.5 s, plenty of visible steps
N_TOKENS = 30


@pytest.fixture(scope="module")
def web_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 8 patients of patient_data.csv, the 8th renamed to HOSTILE; then two patients
    of tests/data/no_vitals.csv whose BP and sugar were not always recorded."""
    folder = tmp_path_factory.mktemp("webdata")
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))[:8]
    rows[-1]["name"] = HOSTILE
    with open(NO_VITALS, newline="") as f:
        rows += [r for r in csv.DictReader(f) if r["patient_id"] in UNMEASURED]
    with open(folder / "patient_data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def patients(web_data: Path) -> dict[int, Any]:
    return load_patients(web_data / "patient_data.csv")


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaThread]:
    with OllamaThread(tps=TPS, n_tokens=N_TOKENS) as thread:
        yield thread


@pytest.fixture(scope="module")
def server(
    web_data: Path, ollama: OllamaThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PageServer]:
    summaries = tmp_path_factory.mktemp("websummaries") / "patient_summaries.csv"
    with PageServer(web_data, summaries, ollama.url) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class Watched:
    """A page with its console errors, page errors and native dialogs collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    w = Watched(context.new_page())
    yield w
    context.close()


def _search(page: Page, query: str) -> None:
    box = page.get_by_role("searchbox", name="Search patients")
    box.fill(query)
    box.press("Enter")
    expect(page.locator("#search-status")).to_contain_text("found")


def _open(page: Page, name: str) -> None:
    page.get_by_role("button", name=name).first.click()
    expect(page.locator("#patient-h")).to_have_text(name)


def _stream_steps(page: Page, timeout: float = 20) -> list[str]:
    """The live text as seen by polling while it is shown, until the Summary box appears."""
    seen: list[str] = []
    stream = page.locator("#stream")
    summary = page.get_by_role("textbox", name="Summary", exact=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not summary.is_visible():
        text = stream.text_content() or ""
        if stream.is_visible() and text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.04)
    return seen


# WCAG 2 contrast of every visible text against the first opaque background behind it:
# 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold). SVG text is coloured by `fill`.
_CONTRAST_JS = """() => {
  const rgb = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const low = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const el = walk.currentNode.parentElement;
    if (!walk.currentNode.textContent.trim() || !el.checkVisibility()) continue;
    if (el.closest("[aria-hidden=true]")) continue; // the highlights behind the Summary box
    const style = getComputedStyle(el);
    const fg = rgb(el instanceof SVGElement ? style.fill : style.color);
    const [a, b] = [lum(fg), lum(behind(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${el.tagName}#${el.id}: ${ratio.toFixed(2)}`);
  }
  return low;
}"""


def _low_contrast(page: Page) -> list[str]:
    return page.evaluate(_CONTRAST_JS)


def _overflowing(page: Page) -> list[str]:
    """The elements sticking out to the right (tables scroll inside their own region)."""
    return page.evaluate(
        """() => {
          const clipped = (e) => {
            for (let a = e.parentElement; a; a = a.parentElement) {
              if (getComputedStyle(a).overflowX !== "visible") return true;
            }
            return false;
          };
          return [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > innerWidth && !clipped(e))
            .map((e) => `${e.tagName}#${e.id}.${e.className}`);
        }"""
    )


def test_full_flow(
    server: PageServer, watched: Watched, patients: dict[int, Any], ollama: OllamaThread
) -> None:
    page = watched.page
    page.goto(server.url)
    expect(page.locator("#conn")).to_contain_text("Connected")

    # Search with a filter: every hit is a button named with the full name as in the data.
    page.get_by_label("Gender").select_option("Female")
    _search(page, "diabetes")
    hits = page.locator("#hits button")
    assert hits.count() >= 1
    for i in range(hits.count()):
        text = hits.nth(i).inner_text()
        hit = patients[int(re.search(r"#(\d+)", text)[1])]
        assert hit.name in text and hit.gender == "Female" and "Matched" in text, text
        # The three strongest matches, then a count: "diabetes" matches a dozen phrases of a
        # diabetic's chart, and each hit names why it is there without repeating the chart.
        matched = text.split("Matched: ", 1)[1]
        shown, _, more = matched.partition(" (and ")
        assert len(shown.split("; ")) <= 3, text
        assert not more or re.fullmatch(r"\d+ more\)", more.strip()), text
    # Mutation caught: every match listed (a diabetic's chart gives more than three).
    assert any(" more)" in hits.nth(i).inner_text() for i in range(hits.count()))
    patient = next(p for p in patients.values() if p.gender == "Female" and "iabetes" in str(p))
    _open(page, patient.name)

    # The visit table shows each visit's BP as written; three charts with the values.
    bp_cells = page.locator("#visits tbody tr td:nth-child(2)")
    assert bp_cells.all_text_contents() == [str(v.bp) for v in patient.visit_history]
    for title in ("Blood pressure", "Blood sugar", "Risk score"):
        chart = page.locator(f'svg[role="img"][aria-label^="{title}"]')
        expect(chart).to_have_count(1)
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (title, box)
    # The charts draw the digest, which arrives after the record.
    bp_chart = page.locator('svg[aria-label^="Blood pressure"]')
    expect(bp_chart).to_have_attribute("aria-label", re.compile(f"now {patient.current_bp}"))
    bp_label = bp_chart.get_attribute("aria-label")
    for v in patient.visit_history:
        assert str(v.bp) in bp_label
    sugar_label = page.locator('svg[aria-label^="Blood sugar"]').get_attribute("aria-label")
    assert str(patient.current_sugar) in sugar_label
    # Thresholds are drawn; a reading beyond them is marked.
    assert page.locator("#chart-sugar line.threshold").count() >= 2
    flagged_sugars = [
        s
        for s in [*(v.sugar for v in patient.visit_history), patient.current_sugar]
        if s < 70 or s >= 200
    ]
    assert page.locator("#chart-sugar circle.flag").count() == len(flagged_sugars)

    # Cancel: visible and enabled only while generating; it stops the model on the server.
    summarize = page.get_by_role("button", name="Summarize")
    cancel = page.locator("#cancel")
    expect(cancel).to_be_hidden()
    completed = ollama.fake.streams_completed
    hung_up = ollama.fake.streams_closed_by_client
    summarize.click()
    expect(cancel).to_be_visible()
    expect(cancel).to_be_enabled()
    expect(page.locator("#gen-status")).to_contain_text("tok/s")
    cancel.click()
    expect(page.locator("#gen-status")).to_contain_text("Cancelled")
    expect(cancel).to_be_hidden()
    deadline = time.monotonic() + 10
    while ollama.fake.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ollama.fake.open_streams == 0
    assert ollama.fake.streams_completed == completed, "the model kept generating after Cancel"
    assert ollama.fake.streams_closed_by_client == hung_up + 1

    # Summarize: the raw text grows in the live region from the first token on.
    summarize.click()
    steps = _stream_steps(page)
    assert len(steps) >= 3, steps
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(steps))
    assert steps[0].startswith(patient.name)  # the record-written opening, as raw text
    expect(page.locator("#stream")).to_have_attribute("aria-live", "polite")
    expect(cancel).to_be_hidden()
    box = page.get_by_role("textbox", name="Summary", exact=True)
    original = box.input_value()
    assert original == next(reversed(server.live.app.summaries.values())).text
    assert original.startswith(steps[-1])
    # The fake model invents a BP: unsupported, and highlighted from the grounding spans.
    expect(page.locator("#verdict")).to_contain_text("Not grounded")
    expect(page.locator("#marks mark").filter(has_text="152/94")).to_have_count(1)
    expect(page.locator("#digest")).to_be_visible()

    # Edit, Check: the verdict follows the edited text.
    grounded = f"{patient.name} is a {patient.age}-year-old woman."
    box.fill(grounded)
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#verdict")).to_contain_text("Grounded")
    expect(page.locator("#marks mark")).to_have_count(0)
    edited = grounded + " Her blood sugar is 555 mg/dL. Reviewed by the clinic."
    box.fill(edited)

    # Save: unsupported claims ask for a second, explicit confirmation in the page.
    page.get_by_role("button", name="Save", exact=True).click()
    confirm = page.locator("#confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Save it anyway?")
    expect(page.locator("#save-status")).not_to_contain_text("Saved")
    page.get_by_role("button", name="Save anyway").click()
    expect(page.locator("#save-status")).to_contain_text("Saved")
    expect(page.locator("#saved-row")).to_contain_text("Reviewed by the clinic.")
    with open(server.live.app.store.path, newline="") as f:
        row = next(r for r in csv.DictReader(f) if int(r["patient_id"]) == patient.patient_id)
    assert row["summary"] == edited
    expect(page.locator("#saved-list")).to_contain_text(patient.name)

    # The protocol view shows every frame, both ways.
    page.locator("#protocol summary").click()
    frames = page.locator("#frames li")
    expect(frames.filter(has_text='"method":"summarize"')).to_have_count(2)
    assert frames.filter(has_text='"method":"stream_token"').count() >= N_TOKENS
    expect(frames.filter(has_text='"method":"save_summary"')).to_have_count(2)

    assert _low_contrast(page) == []

    # Screenshots at phone and desktop widths; the phone layout does not scroll sideways.
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-1280.png", full_page=True)
    page.set_viewport_size({"width": 360, "height": 780})
    width = page.evaluate("document.documentElement.scrollWidth")
    sizes = page.evaluate("[innerWidth, document.documentElement.clientWidth]")
    assert width <= 360, f"the page is {width} px wide at 360 px: {_overflowing(page)} {sizes}"
    page.screenshot(path=ARTIFACTS / "web-360.png", full_page=True)
    assert watched.errors == [] and watched.dialogs == []


def test_hostile_name_shows_as_text_keyboard_only(server: PageServer, watched: Watched) -> None:
    page = watched.page
    page.goto(server.url)
    expect(page.locator("#conn")).to_contain_text("Connected")
    # Keyboard only: Tab to the search box, type, Enter, Tab to the hit, Enter.
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("onerror")
    page.keyboard.press("Enter")
    hit = page.get_by_role("button", name=HOSTILE)
    expect(hit).to_have_count(1)
    hit.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#patient-h")).to_have_text(HOSTILE)
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(200)  # an injected onerror would have fired by now
    assert watched.dialogs == []
    assert watched.errors == []


def _runs(values: list[Any]) -> int:
    """Lines a chart draws for a series: runs of two or more recorded values."""
    runs, length = 0, 0
    for v in [*values, None]:
        if v is None:
            runs += length > 1
            length = 0
        else:
            length += 1
    return runs


@pytest.mark.parametrize("pid", [int(p) for p in UNMEASURED])
def test_a_record_without_vitals_shows_gaps_and_not_recorded(
    server: PageServer, watched: Watched, patients: dict[int, Any], pid: int
) -> None:
    """What was not measured is "not recorded" in the record and a gap in the charts, drawn
    from the digest's readings as the server computed them (issue #23)."""
    patient = patients[pid]
    readings = [r.to_dict() for r in digest(patient).readings]
    page = watched.page
    page.goto(server.url)
    expect(page.locator("#conn")).to_contain_text("Connected")
    _search(page, patient.medical_history[0])
    _open(page, patient.name)
    record = page.locator("#record")
    expect(record).to_contain_text("BP nownot recorded")
    if patient.current_sugar is None:
        expect(record).to_contain_text("Blood sugar nownot recorded")
    bp_chart = page.locator('svg[aria-label^="Blood pressure"]')
    expect(bp_chart).to_have_attribute("aria-label", re.compile("now not recorded"))
    systolic = [r["systolic"] for r in readings]
    sugars = [r["sugar"] for r in readings]
    # One dot per recorded value, a line only between neighbours that were both recorded.
    expect(page.locator("#chart-bp circle.s1")).to_have_count(sum(v is not None for v in systolic))
    assert page.locator("#chart-bp polyline.s1").count() == _runs(systolic)
    expect(page.locator("#chart-sugar circle")).to_have_count(sum(v is not None for v in sugars))
    assert page.locator("#chart-sugar polyline").count() == _runs(sugars)
    assert "0 mg/dL" not in page.locator("#patient").inner_text()
    assert watched.errors == []


def test_a_fhir_export_is_shown_like_a_csv_record(
    watched: Watched, ollama: OllamaThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A patient of a FHIR export: the source id, the death and the resolved conditions in
    the record, "not recorded" for the risk the export has none of, and charts with no error
    (issue #24)."""
    export = tmp_path_factory.mktemp("fhirweb") / "bulk"
    shutil.copytree(Path(__file__).parent / "data" / "fhir" / "bulk", export)
    patients = formats.load(export).patients
    dead = next(p for p in patients.values() if p.deceased is not None)
    summaries = tmp_path_factory.mktemp("fhirsummaries") / "patient_summaries.csv"
    with PageServer(export, summaries, ollama.url) as srv:
        page = watched.page
        page.goto(srv.url)
        expect(page.locator("#conn")).to_contain_text("Connected")
        _search(page, dead.name)
        _open(page, dead.name)
        record = page.locator("#record")
        expect(record).to_contain_text(f"Source id{dead.source_id}")
        expect(record).to_contain_text(f"Deceased{dead.deceased}")
        expect(record).to_contain_text("Risk scorenot recorded")
        assert dead.past_history  # Synthea's resolved conditions, with their dates
        expect(record).to_contain_text(f"Past history{dead.past_history[0]}")
        bp_chart = page.locator('svg[aria-label^="Blood pressure"]')
        expect(bp_chart).to_have_attribute("aria-label", re.compile(f"now {dead.current_bp}"))
        assert watched.errors == []


def test_a_respelled_query_shows_what_was_searched(server: PageServer, watched: Watched) -> None:
    """The server read "hypertention" as hypertension: the page says so (issue 25)."""
    page = watched.page
    page.goto(server.url)
    expect(page.locator("#conn")).to_contain_text("Connected")
    _search(page, "hypertention")
    expect(page.locator("#search-status")).to_have_text(
        re.compile(r"^Showing results for “hypertension” \(you typed “hypertention”\): \d+ pat")
    )
    expect(page.locator(".hit-matched").first).to_contain_text('spelling of "hypertention"')
    assert watched.errors == []


def test_token_prompt(
    web_data: Path, ollama: OllamaThread, watched: Watched, tmp_path: Path
) -> None:
    with PageServer(web_data, tmp_path / "s.csv", ollama.url, auth_token=TOKEN) as srv:
        page = watched.page
        page.goto(srv.url)  # the page and /config.json need no token
        box = page.get_by_role("textbox", name="Access token")
        expect(box).to_be_focused()
        box.fill("wrong")
        box.press("Enter")
        expect(page.locator("#token-error")).to_contain_text("refused")
        expect(box).to_be_visible()
        box.fill(TOKEN)
        box.press("Enter")
        expect(page.locator("#conn")).to_contain_text("Connected")
        expect(page.locator("#token-form")).to_be_hidden()
        _search(page, "hypertension")  # data flows once the token is accepted
        assert TOKEN not in page.url
        stored = page.evaluate("[sessionStorage.getItem('clinsum.token'), localStorage.length]")
        assert stored == [TOKEN, 0]
        # A reload in the same tab keeps the session; a new tab asks again.
        page.reload()
        expect(page.locator("#conn")).to_contain_text("Connected")
        other = page.context.browser.new_page()
        other.goto(srv.url)
        expect(other.get_by_role("textbox", name="Access token")).to_be_visible()
        other.close()
    # The wrong token's refused handshake is the only thing the browser logs.
    assert all(re.search(r"WebSocket connection to .* failed", e) for e in watched.errors), (
        watched.errors
    )
    assert len(watched.errors) <= 1


def documented_csp(ws_port: int) -> str:
    """README's Content-Security-Policy, written out here, not taken from the server's code."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://127.0.0.1:{ws_port} ws://localhost:{ws_port}; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )


def directives(csp: str) -> dict[str, list[str]]:
    """A CSP as {directive: sources}: a failure then shows which directive differs."""
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {name: sources for name, *sources in parts}


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_mcp_server_serves_the_page_without_the_token(
    web_data: Path, ollama: OllamaThread, tmp_path: Path
) -> None:
    """`mcp_server.py --http-port 0 --auth-token T`: the page, its files and /config.json
    need no token (the data does, on the WebSocket), and every answer carries exactly the
    CSP README documents: our own scripts and styles, no inline ones, our WebSocket only.
    Mutation caught: `script-src 'self' 'unsafe-inline'` (or any source added or dropped)."""
    args = server_args(web_data, tmp_path / "s.csv", backend="ollama")
    args += ["--ollama-host", ollama.url, "--http-port", "0", "--auth-token", TOKEN]
    srv = ServerProcess(args, env={"MCP_AUTH_TOKEN": ""})
    try:
        assert srv.wait_for("HTTP face listening on", timeout=60), srv.log
        base = re.search(r"HTTP face listening on (http://\S+)", srv.log)[1]
        status, headers, body = _get(base + "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'<script type="module" src="/static/app.js">' in body
        csp = documented_csp(srv.port)
        assert directives(headers["content-security-policy"]) == directives(csp)
        assert headers["content-security-policy"] == csp
        status, headers, body = _get(base + "/config.json")
        config = json.loads(body)
        assert status == 200 and config["ws_port"] == srv.port and config["auth_required"]
        assert headers["content-security-policy"] == csp
        for path, kind in (
            ("/favicon.ico", "image/svg+xml"),
            ("/static/app.js", "javascript"),
            ("/static/style.css", "text/css"),
        ):
            status, headers, _ = _get(base + path)
            assert status == 200 and kind in headers["content-type"], path
            assert headers["content-security-policy"] == csp, path
        status, headers, _ = _get(base + "/static/%2e%2e/__init__.py")
        assert status == 404 and headers["content-security-policy"] == csp
        status, headers, _ = _get(base + "/metrics")
        assert status == 401  # data and stats still need the token
        assert headers["content-security-policy"] == csp
    finally:
        srv.stop()
