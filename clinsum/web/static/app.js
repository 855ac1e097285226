// The clinicians' page: search, the chart, the streamed summary, edit, check and save.
// One more client of the plain JSON-RPC face (the same methods as clinsum/client.py).
// Rule: text from the server goes into the page through textContent (or a text node),
// never as markup, so a patient named "<img src=x onerror=...>" shows as text.

import { drawChart } from "./charts.js";
import { Connection } from "./rpc.js";

const TOKEN_KEY = "clinsum.token"; // sessionStorage only: gone when the tab closes
const MAX_FRAMES = 5000; // the protocol view keeps this many, then drops the oldest
const UNSUPPORTED = -32005;
const NOT_RECORDED = "not recorded"; // how the page shows a value the record does not have

const $ = (id) => document.getElementById(id);
const state = {
  config: null,
  conn: null,
  patient: null,
  digest: null,
  summary: null, // {id, patientId, original}
  claims: [], // the last check's unsupported claims: {text, from, reason, blocking}
  running: null, // {id} while a summary is generated
};

// The strongest matches, as the terminal clients show them: a common condition can match a
// dozen phrases of one record, and the list is there to say why, not to repeat the chart.
const MATCHED_SHOWN = 3;

function matchedText(matched) {
  if (!matched.length) return "Matched by meaning";
  const rest = matched.length - MATCHED_SHOWN;
  const shown = matched.slice(0, MATCHED_SHOWN).join("; ");
  return `Matched: ${shown}${rest > 0 ? ` (and ${rest} more)` : ""}`;
}

function node(tag, text, cls) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = String(text);
  if (cls) el.className = cls;
  return el;
}

function say(el, text, kind) {
  el.textContent = text;
  el.classList.toggle("error", kind === "error");
}

function errorText(err) {
  return err && err.message ? err.message : String(err);
}

// --- protocol view ----------------------------------------------------------------------------

const frameQueue = [];
let frameFlush = 0;

function logFrame(direction, text) {
  frameQueue.push([direction, text]);
  // Batched per animation frame: a token's own DOM update is not held up by this log.
  if (!frameFlush) frameFlush = requestAnimationFrame(flushFrames);
}

function flushFrames() {
  frameFlush = 0;
  const list = $("frames");
  const batch = document.createDocumentFragment();
  for (const [direction, text] of frameQueue.splice(0)) {
    const item = node("li", null, direction === "out" ? "out" : "in");
    item.append(node("span", direction === "out" ? "→ " : "← ", "dir"), node("code", text));
    batch.append(item);
  }
  list.append(batch);
  while (list.childElementCount > MAX_FRAMES) list.firstElementChild.remove();
}

// --- connection and token ---------------------------------------------------------------------

function setConnected(ok, text, kind) {
  say($("conn"), text, kind);
  document.body.classList.toggle("offline", !ok);
  for (const id of ["search-form", "summarize", "check", "save", "refresh-saved", "force"]) {
    const el = $(id);
    if (el.tagName === "FORM") el.querySelector("button[type=submit]").disabled = !ok;
    else el.disabled = !ok;
  }
}

function askToken(message) {
  const form = $("token-form");
  form.hidden = false;
  say($("token-error"), message || "");
  $("token").focus();
}

// Connects; true once connected. `retrying`: one attempt of `reconnect`, which keeps the
// "Reconnecting…" line and says nothing of a failure (it tries again).
async function connect(retrying = false) {
  const { ws_port: port, auth_required: needsToken } = state.config;
  const token = needsToken ? sessionStorage.getItem(TOKEN_KEY) : null;
  if (needsToken && !token) {
    setConnected(false, "Waiting for the access token");
    askToken();
    return false;
  }
  const url = `ws://${location.hostname}:${port}/`;
  if (!retrying) setConnected(false, `Connecting to ${url}…`);
  $("reconnect").hidden = true;
  const conn = new Connection(url, token, { onFrame: logFrame, onClose: lost });
  try {
    await conn.open();
  } catch {
    if (retrying) return false;
    if (needsToken) {
      sessionStorage.removeItem(TOKEN_KEY);
      setConnected(false, "Not connected", "error");
      // A browser does not say why a WebSocket failed: a wrong token and a server that is
      // down look alike, so the message names both.
      askToken(`The server refused the connection (or ${url} did not answer): check the access token and try again.`);
    } else {
      setConnected(false, `Cannot reach the server at ${url}: is it running?`, "error");
      $("reconnect").hidden = false;
    }
    return false;
  }
  state.conn = conn;
  $("token-form").hidden = true;
  setConnected(true, `Connected to ${url}`);
  loadSaved();
  return true;
}

// A lost connection is taken up again on its own: behind a load balancer the next one lands
// on another replica, which finds the summary being edited by its summary_id (PostgreSQL
// store). Nothing on the page is cleared, so an edit in progress is kept and can be saved.
const RETRY_MS = [100, 250, 500, 1000, 2000, 4000];
const RETRIES = 20; // about a minute, then the Reconnect button
let reconnecting = false;

function lost(event) {
  state.conn = null;
  const why = event.reason ? `: ${event.reason}` : "";
  reconnect(`Disconnected (code ${event.code}${why})`);
}

async function reconnect(why) {
  if (reconnecting) return;
  reconnecting = true;
  try {
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      setConnected(false, `Reconnecting… (${why}; what you are editing is kept)`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]));
      if (await connect(true)) return;
    }
    setConnected(false, `${why}: the server does not answer`, "error");
    $("reconnect").hidden = false;
  } finally {
    reconnecting = false;
  }
}

function call(method, params, onNotify) {
  if (!state.conn) throw new Error("Not connected to the server");
  return state.conn.call(method, params, onNotify);
}

// --- search -----------------------------------------------------------------------------------

function numberField(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

async function search(event) {
  event.preventDefault();
  const status = $("search-status");
  const query = $("q").value.trim();
  const filters = {};
  const minAge = numberField("min-age");
  const maxAge = numberField("max-age");
  const minRisk = numberField("min-risk");
  if (minAge !== undefined) filters.min_age = minAge;
  if (maxAge !== undefined) filters.max_age = maxAge;
  if (minRisk !== undefined) filters.min_risk = minRisk;
  if ($("gender").value) filters.gender = $("gender").value;
  const params = { query, top_k: 10 };
  if (Object.keys(filters).length) params.filters = filters;
  say(status, "Searching…");
  try {
    const { results, corrected } = await call("search", params).result;
    renderHits(results);
    const count = `${results.length} patient${results.length === 1 ? "" : "s"}`;
    // The server respelled a misspelled word: say which query was searched.
    say(
      status,
      corrected === undefined
        ? `${count} found for “${query}”`
        : `Showing results for “${corrected}” (you typed “${query}”): ${count} found`,
    );
  } catch (err) {
    say(status, errorText(err), "error");
  }
}

function renderHits(hits) {
  const list = $("hits");
  list.replaceChildren();
  for (const hit of hits) {
    const button = node("button", null, "hit");
    button.type = "button";
    button.append(
      node("span", hit.name, "hit-name"),
      node("span", `${hit.age} · ${hit.gender} · #${hit.patient_id}`, "hit-meta"),
      node("span", matchedText(hit.matched), "hit-matched"),
    );
    button.addEventListener("click", () => openPatient(hit.patient_id));
    const item = node("li");
    item.append(button);
    list.append(item);
  }
}

// --- the patient ------------------------------------------------------------------------------

async function openPatient(id) {
  const status = $("search-status");
  cancel(); // a summary still being written belongs to the patient being left
  try {
    const { patient } = await call("fetch", { patient_id: id }).result;
    state.patient = patient;
    state.digest = null;
    renderPatient(patient);
    resetSummary();
    const section = $("patient");
    section.hidden = false;
    section.focus({ preventScroll: true }); // keyboard and screen reader users land here
    section.scrollIntoView({ block: "start" });
    loadDigest(patient.patient_id);
  } catch (err) {
    say(status, errorText(err), "error");
  }
}

function renderPatient(p) {
  $("patient-h").textContent = p.name;
  const record = $("record");
  record.replaceChildren();
  const fields = [
    ["Patient id", p.patient_id],
    ["Age", p.age],
    ["Gender", p.gender],
    ["Symptoms now", p.current_symptoms],
    ["BP now", p.current_bp === null ? NOT_RECORDED : p.current_bp],
    ["Blood sugar now", p.current_sugar === null ? NOT_RECORDED : `${p.current_sugar} mg/dL`],
    ["Risk score", p.risk_score === null ? NOT_RECORDED : p.risk_score],
    ["Base score", p.base_score === null ? NOT_RECORDED : p.base_score],
    ["History", p.medical_history],
    ["Medications", p.current_medications],
  ];
  // What a FHIR export adds: the record's own id there, a death, the conditions resolved.
  if (p.source_id !== undefined) fields.splice(1, 0, ["Source id", p.source_id]);
  if (p.deceased !== undefined) fields.splice(2, 0, ["Deceased", p.deceased]);
  if (p.past_history !== undefined) fields.push(["Past history", p.past_history]);
  for (const [label, value] of fields) {
    const row = node("div");
    row.append(node("dt", label), node("dd", value));
    record.append(row);
  }
  const body = $("visits").tBodies[0];
  body.replaceChildren();
  for (const v of p.visit_history) {
    const tr = node("tr");
    for (const value of [v.date, v.bp, v.sugar, v.risk_score, v.symptoms, v.medications, v.outcome, v.notes]) {
      tr.append(node("td", value === null || value === undefined ? NOT_RECORDED : value));
    }
    body.append(tr);
  }
  drawCharts(null); // until the digest arrives
}

// The charts draw the digest's readings as the server computed them: its values (null where
// nothing was recorded), its categories and flags. Only the threshold lines come from
// /config.json, which the server fills from the digest's own constants.
function drawCharts(d, scale) {
  const t = state.config.thresholds;
  const rows = d ? d.readings || [] : [];
  const labels = rows.map((r) => r.date);
  const shown = (v, unit) => (v === null || v === undefined ? "not recorded" : `${v}${unit}`);
  const systolic = rows.map((r) => r.systolic);
  const diastolic = rows.map((r) => r.diastolic);
  const bpText = (r) => (r.systolic === null ? "not recorded" : `${r.systolic}/${r.diastolic}`);
  drawChart($("chart-bp"), {
    title: "Blood pressure",
    unit: "mmHg",
    labels,
    series: [
      { name: "systolic", cls: "s1", values: systolic },
      { name: "diastolic", cls: "s2", values: diastolic },
    ],
    thresholds: [
      { value: t.systolic.high, label: `${t.systolic.high} systolic` },
      { value: t.diastolic.high, label: `${t.diastolic.high} diastolic` },
      ...(rows.some((r) => r.bp_flagged) ? [{ value: t.systolic.crisis, label: `${t.systolic.crisis} crisis` }] : []),
    ],
    flagged: (si, i) => rows[i].bp_flagged,
    format: (v) => String(Math.round(v)),
    describe: (i) => `${bpText(rows[i])}${rows[i].bp_flagged ? ` (flagged: ${rows[i].bp_category})` : ""}`,
  });

  const sugars = rows.map((r) => r.sugar);
  drawChart($("chart-sugar"), {
    title: "Blood sugar",
    unit: "mg/dL",
    labels,
    series: [{ name: "sugar", cls: "s1", values: sugars }],
    thresholds: [
      { value: t.sugar.low, label: `${t.sugar.low} low` },
      { value: t.sugar.high, label: `${t.sugar.high} high` },
      ...(rows.some((r) => r.sugar_category === "crisis" || r.sugar_category === "high")
        ? [{ value: t.sugar.crisis, label: `${t.sugar.crisis} crisis` }]
        : []),
    ],
    flagged: (si, i) => rows[i].sugar_flagged,
    format: (v) => String(Math.round(v)),
    describe: (i) => `${shown(sugars[i], "")}${rows[i].sugar_flagged ? ` (flagged: ${rows[i].sugar_category})` : ""}`,
  });

  // Risk has no screening threshold; the digest marks a change of 0.10 (on the 0-1 scale)
  // from the first recorded risk, drawn as the band such a change leaves.
  const risks = rows.map((r) => r.risk);
  const step = t.risk_change * (Number(scale) || 1);
  const first = risks.find((v) => v !== null && v !== undefined);
  drawChart($("chart-risk"), {
    title: "Risk score",
    unit: (Number(scale) || 1) === 1 ? "0 to 1" : `0 to ${scale}`,
    labels,
    series: [{ name: "risk", cls: "s1", values: risks }],
    thresholds:
      first === undefined
        ? []
        : [
            { value: first + step, label: `first +${+step.toFixed(2)}` },
            { value: first - step, label: `first −${+step.toFixed(2)}` },
          ],
    flagged: (si, i) => rows[i].risk_moved,
    format: (v) => v.toFixed(2),
    describe: (i) => `${shown(risks[i], "")}${rows[i].risk_moved ? " (meaningful change)" : ""}`,
  });
}

async function loadDigest(patientId) {
  try {
    const result = await call("digest", { patient_id: patientId }).result;
    if (state.patient && state.patient.patient_id === patientId) {
      state.digest = result.digest;
      renderDigest(state.digest);
    }
  } catch (err) {
    renderDigest(null, err && err.code === -32601 ? "This server does not compute a digest." : errorText(err));
  }
}

function renderDigest(d, message) {
  drawCharts(d, state.patient && state.patient.score_scale);
  const body = $("digest-body");
  body.replaceChildren();
  if (!d) {
    body.append(node("p", message || "No digest yet."));
    return;
  }
  const list = (title, items) => {
    if (!items.length) return;
    body.append(node("h5", title));
    const ul = node("ul");
    for (const item of items) ul.append(node("li", item.text, item.flag ? "flagged" : ""));
    body.append(ul);
  };
  list("Now", (d.vitals || []).map((v) => ({
    text: `${v.measure} ${v.value} ${v.unit}: ${v.category}${v.flagged ? " (flagged)" : ""}`,
    flag: v.flagged,
  })));
  list("Trends", (d.trends || []).map((tr) => ({
    text: `${tr.measure} ${tr.direction}: ${tr.points.map((pt) => `${pt.value} (${pt.date})`).join(" → ")}${tr.unit ? ` ${tr.unit}` : ""}`
      + `${tr.meaningful ? " — meaningful" : ""}${tr.latest_step && tr.latest_step !== "flat" ? `, latest step ${tr.latest_step}` : ""}`,
    flag: tr.meaningful,
  })));
  list("Medication changes", (d.med_changes || []).map((m) => ({
    text: `${m.drug}: ${m.change}${m.before || m.after ? ` (${m.before || "—"} → ${m.after || "—"})` : ""}`,
  })));
  list("New conditions", (d.new_conditions || []).map((c) => ({ text: c })));
  if (d.latest_visit) {
    const v = d.latest_visit;
    list("Latest visit", [{ text: `${v.date}: ${v.outcome}. ${v.key_point}` }]);
  }
  if (d.visits !== undefined) body.append(node("p", `${d.visits} visits over ${d.span_days} days`));
}

// --- summarize, edit, check, save -------------------------------------------------------------

function resetSummary() {
  state.summary = null;
  state.claims = [];
  $("stream").hidden = true;
  $("stream").replaceChildren();
  $("draft").hidden = true;
  $("confirm").hidden = true;
  $("saved-row-wrap").hidden = true;
  say($("gen-status"), "");
  say($("save-status"), "");
  renderDigest(null);
}

function setRunning(running) {
  $("summarize").disabled = running || !state.conn;
  $("cancel").hidden = !running;
  $("cancel").disabled = !running;
}

async function summarize() {
  const patient = state.patient;
  if (!patient || state.running) return;
  resetSummary();
  const stream = $("stream");
  const text = document.createTextNode("");
  stream.append(text);
  stream.hidden = false;
  const status = $("gen-status");
  let tokens = 0;
  let firstModel = 0;
  performance.clearMarks("clinsum:token");
  const onNotify = (method, params) => {
    if (method === "stream_token") {
      text.appendData(params.token);
      performance.mark("clinsum:token", { detail: params.index });
      tokens += 1;
      if (params.index >= 1 && !firstModel) firstModel = performance.now();
      const secs = (performance.now() - firstModel) / 1000;
      const rate = firstModel && secs > 0 ? (tokens - 2) / secs : 0;
      say(status, `Writing: ${tokens} tokens · ${rate.toFixed(1)} tok/s`);
    } else if (method === "stream_queued") {
      const n = params.position;
      say(status, `Queued: waiting for the model behind ${n} other request${n === 1 ? "" : "s"}`);
    }
  };
  say(status, "Asking the model…");
  let running;
  try {
    running = call("summarize", { patient_id: patient.patient_id }, onNotify);
  } catch (err) {
    say(status, errorText(err), "error");
    return;
  }
  state.running = running;
  setRunning(true);
  try {
    const result = await running.result;
    showDraft(result);
  } catch (err) {
    if (err.cancelled) say(status, `Cancelled after ${tokens} tokens: nothing was saved.`);
    else say(status, errorText(err), "error");
  } finally {
    state.running = null;
    setRunning(false);
  }
}

function cancel() {
  if (state.running && state.conn) state.conn.cancel(state.running.id);
}

function showDraft(result) {
  state.summary = { id: result.summary_id, patientId: result.patient_id, original: result.summary };
  const box = $("summary-text");
  box.value = result.summary;
  $("stream").hidden = true;
  $("draft").hidden = false;
  say(
    $("gen-status"),
    `Finished: ${result.tokens} tokens in ${(result.duration_ms / 1000).toFixed(1)} s `
      + `(${result.tokens_per_s} tok/s, ${result.backend} ${result.model})`,
  );
  renderGrounding(result.grounding, result.summary);
  if (result.digest) state.digest = result.digest;
  renderDigest(state.digest, "This server does not compute a digest.");
  box.focus();
}

// Grounding spans count code points (Python); a JS string counts UTF-16 units.
function utf16Index(text, codePoints) {
  let i = 0;
  for (let n = 0; n < codePoints && i < text.length; n += 1) i += text.codePointAt(i) > 0xffff ? 2 : 1;
  return i;
}

function renderGrounding(g, checkedText) {
  const claims = (g.unsupported || [])
    .map((c) => {
      const from = utf16Index(checkedText, c.start);
      return { ...c, from, text: checkedText.slice(from, utf16Index(checkedText, c.end)) };
    })
    .sort((a, b) => a.from - b.from);
  const blocking = claims.filter((c) => c.blocking !== false).length;
  let verdict = g.ok
    ? "Grounded: the record supports every claim checked."
    : `Not grounded: ${blocking} claim${blocking === 1 ? "" : "s"} the record does not support.`;
  if (typeof g.coverage === "number") verdict += ` Key facts stated: ${Math.round(g.coverage * 100)}%.`;
  say($("verdict"), verdict, g.ok ? "" : "error");
  $("verdict").classList.toggle("ok", Boolean(g.ok));
  state.claims = claims;
  renderMarks();
  $("claims-wrap").hidden = claims.length === 0;
  const list = $("claims");
  list.replaceChildren();
  for (const c of claims) {
    const item = node("li");
    const button = node("button", `“${c.text}”`, "claim");
    button.type = "button";
    button.setAttribute("aria-label", `Select “${c.text}” in the summary`);
    button.addEventListener("click", () => selectClaim(c));
    item.append(button, node("span", ` ${c.reason}${c.blocking === false ? " (not blocking)" : ""}`));
    list.append(item);
  }
}

// Where a claim is in the box now: at its checked place, else the nearest copy of its text
// (the clinician may have edited around it), else nowhere (edited away).
function locate(text, claim) {
  if (text.startsWith(claim.text, claim.from)) return claim.from;
  const after = text.indexOf(claim.text, Math.max(0, claim.from - 40));
  return after >= 0 ? after : text.indexOf(claim.text);
}

// The highlights behind the box, for its current text; and the box's height to fit it.
function renderMarks() {
  const box = $("summary-text");
  const text = box.value;
  const marks = $("marks");
  marks.replaceChildren();
  let at = 0;
  const found = (state.claims || [])
    .map((c) => ({ c, from: locate(text, c) }))
    .filter((m) => m.from >= 0)
    .sort((a, b) => a.from - b.from);
  for (const { c, from } of found) {
    if (from < at) continue; // overlapping spans: the first one is marked
    marks.append(text.slice(at, from), node("mark", c.text, c.blocking === false ? "soft" : ""));
    at = from + c.text.length;
  }
  marks.append(text.slice(at) + "\n"); // a trailing newline still takes a line in the box
  box.style.height = "auto";
  box.style.height = `${box.scrollHeight + 2}px`; // + the 1 px borders
}

function selectClaim(claim) {
  const box = $("summary-text");
  const at = locate(box.value, claim);
  box.focus();
  if (at >= 0) box.setSelectionRange(at, at + claim.text.length);
}

async function check() {
  if (!state.summary) return;
  const text = $("summary-text").value;
  say($("verdict"), "Checking…");
  try {
    const { grounding } = await call("check_summary", { summary_id: state.summary.id, text }).result;
    renderGrounding(grounding, text);
  } catch (err) {
    say($("verdict"), errorText(err), "error");
  }
}

async function save(force) {
  if (!state.summary) return;
  const text = $("summary-text").value;
  const params = { summary_id: state.summary.id, force };
  if (text !== state.summary.original) params.text = text;
  const status = $("save-status");
  $("confirm").hidden = true;
  say(status, "Saving…");
  try {
    const saved = await call("save_summary", params).result;
    say(status, `Saved: the summary for ${saved.name || state.patient.name} is in ${saved.path}`);
    showSavedRow(saved.patient_id);
  } catch (err) {
    if (err.code === UNSUPPORTED) {
      const claims = (err.data && err.data.unsupported) || [];
      if (claims.length) renderGrounding({ ok: false, unsupported: claims }, text);
      say(status, "Not saved yet: waiting for your confirmation.");
      $("confirm-text").textContent =
        `The record does not support ${claims.length || "some"} claim${claims.length === 1 ? "" : "s"} `
        + "in this text (highlighted above). Save it anyway?";
      $("confirm").hidden = false;
      $("keep").focus();
    } else {
      say(status, errorText(err), "error");
    }
  }
}

function fillTable(table, rows) {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const head = node("tr");
  for (const c of columns) {
    const th = node("th", c);
    th.scope = "col";
    head.append(th);
  }
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = node("tr");
    for (const c of columns) tr.append(node("td", r[c] ?? "", c === "summary" ? "text" : ""));
    body.append(tr);
  }
}

async function showSavedRow(patientId) {
  const rows = await loadSaved();
  const row = rows.find((r) => String(r.patient_id) === String(patientId));
  if (!row) return;
  fillTable($("saved-row"), [row]);
  $("saved-row-wrap").hidden = false;
}

async function loadSaved() {
  const status = $("saved-status");
  try {
    const { summaries } = await call("list_summaries", {}).result;
    fillTable($("saved-list"), summaries);
    say(status, summaries.length ? `${summaries.length} saved` : "None saved yet.");
    return summaries;
  } catch (err) {
    say(status, errorText(err), "error");
    return [];
  }
}

// --- start ------------------------------------------------------------------------------------

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value;
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    connect();
  });
  $("reconnect").addEventListener("click", () => connect());
  $("search-form").addEventListener("submit", search);
  $("summarize").addEventListener("click", summarize);
  $("cancel").addEventListener("click", cancel);
  $("check").addEventListener("click", check);
  $("save").addEventListener("click", () => save(false));
  $("force").addEventListener("click", () => save(true));
  $("keep").addEventListener("click", () => {
    $("confirm").hidden = true;
    say($("save-status"), "Not saved.");
    $("summary-text").focus();
  });
  $("summary-text").addEventListener("input", () => {
    $("verdict").textContent = "Edited since the last check: press Check to check this text.";
    $("verdict").className = "verdict";
    renderMarks();
  });
  window.addEventListener("resize", () => {
    if (!$("draft").hidden) renderMarks();
  });
  $("refresh-saved").addEventListener("click", loadSaved);
  $("clear-frames").addEventListener("click", () => $("frames").replaceChildren());
}

async function start() {
  wire();
  setConnected(false, "Loading…");
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.config = await response.json();
  } catch (err) {
    setConnected(false, `Cannot load /config.json (${errorText(err)}): reload the page.`, "error");
    return;
  }
  connect();
}

start();
