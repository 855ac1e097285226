// Hand-drawn SVG line charts: a few dozen points need no charting library.
// Everything from the data goes in through setAttribute or textContent, never as markup.

const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 170;
const M = { left: 38, right: 10, top: 10, bottom: 26 };

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(+v.toFixed(6));
  return ticks;
}

// spec: {title, unit, labels: [date...], series: [{name, cls, values: [number|null...]}],
//        thresholds: [{value, label}], flagged(seriesIndex, pointIndex) -> bool (as the server
//        flagged it), format(v) -> str, describe(i) -> str (one point in the text alternative)}
// A null value was not recorded: the line breaks there (a gap, never a zero).
export function drawChart(figure, spec) {
  figure.replaceChildren();
  const all = spec.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const marks = spec.thresholds.map((t) => t.value);
  let lo = Math.min(...all, ...marks);
  let hi = Math.max(...all, ...marks);
  if (!Number.isFinite(lo)) [lo, hi] = [0, 1];
  if (hi === lo) [lo, hi] = [lo - 1, hi + 1];
  const pad = (hi - lo) * 0.08;
  lo -= pad;
  hi += pad;
  const n = spec.labels.length;
  const x = (i) => M.left + (n === 1 ? (W - M.left - M.right) / 2 : (i * (W - M.left - M.right)) / (n - 1));
  const y = (v) => M.top + ((hi - v) * (H - M.top - M.bottom)) / (hi - lo);

  const points = spec.labels.map((label, i) => `${label} ${spec.describe(i)}`);
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    class: "chart",
    "aria-label": `${spec.title} by visit (${spec.unit}): ${points.join("; ")}`,
  });

  for (const t of niceTicks(lo, hi, 4)) {
    svg.append(el("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(el("text", { x: M.left - 4, y: y(t) + 3, class: "tick", "text-anchor": "end" }, spec.format(t)));
  }
  for (const t of spec.thresholds) {
    svg.append(el("line", { x1: M.left, x2: W - M.right, y1: y(t.value), y2: y(t.value), class: "threshold" }));
    svg.append(el("text", { x: W - M.right - 2, y: y(t.value) - 3, class: "threshold-label", "text-anchor": "end" }, t.label));
  }
  const every = Math.ceil(n / 6);
  spec.labels.forEach((label, i) => {
    if (i % every === 0 || i === n - 1) {
      svg.append(el("text", { x: x(i), y: H - 8, class: "tick", "text-anchor": "middle" }, label.slice(0, 7)));
    }
  });
  spec.series.forEach((s, si) => {
    let run = [];
    const runs = [run];
    s.values.forEach((v, i) => {
      if (Number.isFinite(v)) run.push(`${x(i)},${y(v)}`);
      else if (run.length) runs.push((run = []));
    });
    for (const coords of runs) {
      if (coords.length > 1) svg.append(el("polyline", { points: coords.join(" "), class: `line ${s.cls}` }));
    }
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      const flagged = spec.flagged(si, i);
      svg.append(el("circle", { cx: x(i), cy: y(v), r: flagged ? 5.5 : 3, class: flagged ? `dot flag ${s.cls}` : `dot ${s.cls}` }));
    });
  });

  const caption = document.createElement("figcaption");
  const title = document.createElement("strong");
  title.textContent = `${spec.title} (${spec.unit})`;
  caption.append(title);
  for (const s of spec.series) {
    const key = document.createElement("span");
    key.className = `key ${s.cls}`;
    key.textContent = s.name;
    caption.append(" ", key);
  }
  if (spec.thresholds.length) {
    const key = document.createElement("span");
    key.className = "key threshold";
    key.textContent = "threshold";
    caption.append(" ", key);
    const flag = document.createElement("span");
    flag.className = "key flag";
    flag.textContent = "flagged";
    caption.append(" ", flag);
  }
  figure.append(svg, caption);
}
