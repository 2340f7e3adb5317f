// Keel's dashboard: one page, plain ES modules, uPlot for charts. Every
// view's state is in the URL (path + query), so a view can be shared.
import uPlot from "/ui/vendor/uPlot.esm.js";

const $ = (sel, el = document) => el.querySelector(sel);
const main = $("#main");
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const COLOURS = { green: "#2e9d4f", orange: "#e08a00", red: "#d62728", blue: "#1f77b4", yellow: "#c9b200", grey: "#888888" };
const RANGES = { "5m": 3e5, "15m": 9e5, "1h": 36e5, "6h": 216e5, "12h": 432e5, "24h": 864e5, "2d": 1728e5, "7d": 6048e5 };
// The events the charts annotate (every tick's "decision" would drown them).
const QUIET_KINDS = new Set(["decision"]);

let refreshTimer = null;
// Who is looking ({login, user, role, csrf}, from /api/v1/session): a
// viewer sees no buttons that change anything; changes echo the CSRF token.
let me = { login: false, user: null, role: "admin", csrf: null };
const RANK = { viewer: 0, editor: 1, admin: 2 };
/** Whether the person looking has at least `role`. */
function can(role) { return me.user !== null && RANK[me.role] >= RANK[role]; }
let generation = 0; // bumps on every render, so late answers of an old view are dropped

// ---- URL state -------------------------------------------------------------

function params() { return new URLSearchParams(location.search); }

function setParams(changes, { push = false } = {}) {
  const p = params();
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === "") p.delete(k); else p.set(k, v);
  }
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function navigate(url) {
  history.pushState(null, "", url);
  render();
}

/** The time range of the URL: `range=1h` (the last hour, default) or `from`/`to` in ms. */
function timeRange() {
  const p = params();
  const now = Date.now();
  if (p.get("from") && p.get("to")) {
    const from = Number(p.get("from")), to = Number(p.get("to"));
    if (Number.isFinite(from) && Number.isFinite(to) && to > from) return { start: from, end: to, custom: true };
  }
  const span = RANGES[p.get("range")] || RANGES["1h"];
  return { start: now - span, end: now, custom: false };
}

function syncTimePicker() {
  const p = params();
  const range = $("#range");
  const custom = p.get("from") && p.get("to");
  range.value = custom ? "custom" : (RANGES[p.get("range")] ? p.get("range") : "1h");
  $("#custom").hidden = !custom;
  if (custom) {
    $("#from").value = localInput(Number(p.get("from")));
    $("#to").value = localInput(Number(p.get("to")));
  }
  $("#live").checked = p.get("live") === "1";
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

$("#range").addEventListener("change", (e) => {
  if (e.target.value === "custom") {
    const { start, end } = timeRange();
    $("#custom").hidden = false;
    $("#from").value = localInput(start);
    $("#to").value = localInput(end);
    return;
  }
  setParams({ range: e.target.value, from: null, to: null }, { push: true });
  render();
});
$("#apply").addEventListener("click", () => {
  const from = new Date($("#from").value).getTime(), to = new Date($("#to").value).getTime();
  if (!(to > from)) { alert("The end must be after the start."); return; }
  setParams({ from, to, range: null, live: null }, { push: true });
  render();
});
$("#live").addEventListener("change", (e) => {
  setParams(e.target.checked ? { live: "1", from: null, to: null } : { live: null });
  render();
});
$("#modal-close").addEventListener("click", () => { $("#modal").hidden = true; });
$("#modal").addEventListener("click", (e) => { if (e.target.id === "modal") $("#modal").hidden = true; });
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (a && !e.ctrlKey && !e.metaKey && a.origin === location.origin) { e.preventDefault(); navigate(a.getAttribute("href")); }
});
window.addEventListener("popstate", render);

// ---- helpers ---------------------------------------------------------------

/** `opts` with the session's CSRF token on anything but a GET. */
function withCsrf(opts = {}) {
  const method = (opts.method || "GET").toUpperCase();
  return method !== "GET" && me.csrf ? { ...opts, headers: { ...(opts.headers || {}), "x-keel-csrf": me.csrf } } : opts;
}

async function api(path, opts = {}) {
  const r = await fetch(path, withCsrf(opts));
  if (r.status === 401 && me.login && !path.startsWith("/api/v1/login")) {
    me.user = null;
    loginPage();
    throw new Error("Log in to go on.");
  }
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (!r.ok || (body && body.status === "error")) {
    throw new Error((body && body.error) || `HTTP ${r.status} from ${path.split("?")[0]}`);
  }
  return body ? body.data : null;
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

function showModal(title, ...content) {
  const body = $("#modal-body");
  body.replaceChildren(h("h1", {}, title), ...content);
  $("#modal").hidden = false;
}

/** A number in a unit, short. */
export function fmt(v, unit = "short") {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const si = (x, suffix = "") => {
    const a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(2) + "G" + suffix;
    if (a >= 1e6) return (x / 1e6).toFixed(2) + "M" + suffix;
    if (a >= 1e3) return (x / 1e3).toFixed(2) + "k" + suffix;
    if (a >= 100 || a === 0) return x.toFixed(0) + suffix;
    if (a >= 1) return x.toFixed(2).replace(/\.?0+$/, "") + suffix;
    return x.toPrecision(2) + suffix;
  };
  const bytes = (x, suffix = "") => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return (i ? x.toFixed(1) : x.toFixed(0)) + " " + units[i] + suffix;
  };
  switch (unit) {
    case "reqps": return si(v, "/s");
    case "seconds": {
      const a = Math.abs(v);
      if (a === 0) return "0";
      if (a < 1e-3) return (v * 1e6).toFixed(0) + " µs";
      if (a < 1) return (v * 1e3).toFixed(a < 0.01 ? 1 : 0) + " ms";
      if (a < 120) return v.toFixed(2).replace(/\.?0+$/, "") + " s";
      return (v / 60).toFixed(1) + " min";
    }
    case "percentunit": return (v * 100).toFixed(Math.abs(v) < 0.1 ? 2 : 1) + "%";
    case "percent": return v.toFixed(1) + "%";
    case "bytes": return bytes(v);
    case "bytesps": return bytes(v, "/s");
    default: return si(v);
  }
}

function colourOf(thresholds, v) {
  let c = null;
  for (const t of thresholds || []) if (v >= t.value) c = COLOURS[t.color] || t.color;
  return c;
}

function when(ms) { return new Date(ms).toLocaleString(); }

function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function statusLine(el, text, isError = false) {
  el.replaceChildren(h("div", { class: "status" + (isError ? " error" : "") }, text));
}

function scheduleRefresh(fn) {
  clearInterval(refreshTimer);
  refreshTimer = null;
  if (params().get("live") === "1") refreshTimer = setInterval(fn, 5000);
}

// ---- the timeline (annotations) ---------------------------------------------

function eventColour(e) {
  if (e.kind === "alert") return e.state === "firing" ? COLOURS.red : e.state === "pending" ? COLOURS.orange : COLOURS.green;
  if (e.kind === "scale") return COLOURS.blue;
  if (e.kind.includes("error")) return COLOURS.red;
  return "#9467bd";
}

async function timeline(start, end) {
  try {
    const all = await api(`/api/v1/events?start=${start / 1000}&end=${end / 1000}&limit=2000&exclude=decision`);
    return (all || []).filter((e) => !QUIET_KINDS.has(e.kind));
  } catch { return []; }
}

function showEvent(e) {
  showModal(e.explanation || e.kind,
    h("p", { class: "muted" }, `${e.kind} · ${e.subject || ""} · ${when(e.at_ms)}`),
    h("pre", {}, JSON.stringify(e, null, 2)));
}

/** A uPlot plugin: each event a line and a dot (click: its inputs). */
function annotations(events) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const e of events) {
          const x = u.valToPos(e.at_ms / 1000, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = eventColour(e);
          ctx.globalAlpha = 0.55;
          ctx.setLineDash([4, 3]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
        u.over.querySelectorAll(".annotation").forEach((d) => d.remove());
        for (const e of events) {
          const x = u.valToPos(e.at_ms / 1000, "x");
          if (x < 0 || x > u.over.clientWidth) continue;
          const dot = h("div", { class: "annotation", title: e.explanation || e.kind, "data-kind": e.kind, style: { left: x + "px", background: eventColour(e) } });
          dot.addEventListener("mousedown", (ev) => ev.stopPropagation());
          dot.addEventListener("click", (ev) => { ev.stopPropagation(); showEvent(e); });
          u.over.append(dot);
        }
      }],
    },
  };
}

/** A uPlot plugin: each exemplar a diamond at its time and value, a
 * link to its trace (Grafana's exemplar points). */
function exemplarPoints(exemplars, panel) {
  return {
    hooks: {
      draw: [(u) => {
        u.over.querySelectorAll(".exemplar").forEach((d) => d.remove());
        for (const e of exemplars || []) {
          const x = u.valToPos(e.t / 1000, "x");
          const y = u.valToPos(e.value, "y");
          if (x < 0 || x > u.over.clientWidth || y < 0 || y > u.over.clientHeight) continue;
          const trace = e.labels.trace_id;
          const title = `exemplar ${fmt(e.value, panel.unit)} at ${when(e.t)}` + (trace ? `\ntrace ${trace}` : "");
          const dot = trace
            ? h("a", { class: "exemplar", href: `/ui/trace/${encodeURIComponent(trace)}`, "data-nav": true, "data-trace": trace, title })
            : h("span", { class: "exemplar", title });
          dot.style.left = x + "px";
          dot.style.top = y + "px";
          dot.addEventListener("mousedown", (ev) => ev.stopPropagation());
          u.over.append(dot);
        }
      }],
    },
  };
}

/** In replay mode, a line at the slider's time. */
function replayCursor() {
  return {
    hooks: {
      draw: [(u) => {
        if (!window.__replayAt) return;
        const x = u.valToPos(window.__replayAt() / 1000, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#111";
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.restore();
      }],
    },
  };
}

function thresholdLines(thresholds) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        for (const t of thresholds || []) {
          const y = u.valToPos(t.value, "y", true);
          if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
          ctx.strokeStyle = COLOURS[t.color] || t.color;
          ctx.setLineDash([6, 4]);
          ctx.beginPath();
          ctx.moveTo(u.bbox.left, y);
          ctx.lineTo(u.bbox.left + u.bbox.width, y);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

// ---- panels ----------------------------------------------------------------

function chart(el, data, panel, events, { bars = false } = {}) {
  const width = Math.max(200, el.clientWidth - 4);
  const xs = data.timestamps.map((t) => t / 1000);
  const series = data.series.map((s, i) => ({
    label: s.name,
    stroke: PALETTE[i % PALETTE.length],
    fill: bars ? PALETTE[i % PALETTE.length] + "99" : undefined,
    width: 1.5,
    spanGaps: false,
    paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
    points: bars ? { show: false } : undefined,
    value: (u, v) => fmt(v, panel.unit),
  }));
  const opts = {
    width, height: 180,
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
    scales: {
      x: { time: true },
      // From 0 (or below, for negative data) to a little above the top;
      // a flat line gets a range of its own rather than a zero-height one.
      y: { range: (u, min, max) => {
        const lo = Math.min(0, min);
        const hi = max > lo ? max + (max - lo) * 0.08 : (panel.unit === "percentunit" ? 0.01 : Math.abs(max) || 1);
        return [lo, hi];
      } },
    },
    axes: [{ size: 30 }, { size: 70, values: (u, vals) => vals.map((v) => fmt(v, panel.unit)) }],
    series: [{}, ...series],
    plugins: [annotations(events), thresholdLines(panel.thresholds), replayCursor(), exemplarPoints(data.exemplars, panel)],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const from = Math.round(u.posToVal(u.select.left, "x") * 1000);
        const to = Math.round(u.posToVal(u.select.left + u.select.width, "x") * 1000);
        setParams({ from, to, range: null, live: null }, { push: true });
        render();
      }],
      setCursor: [(u) => tooltip(u, panel, el)],
    },
  };
  const plot = new uPlot(opts, [xs, ...data.series.map((s) => s.values)], el);
  el.append(h("div", { class: "legend" }, data.series.slice(0, 12).map((s, i) =>
    h("span", { style: { "--c": PALETTE[i % PALETTE.length] } }, `${s.name}  ${fmt(lastValue(s.values), panel.unit)}`))));
  return plot;
}

function tooltip(u, panel, el) {
  let tip = $(".tip", el);
  const i = u.cursor.idx;
  if (i === null || i === undefined || u.cursor.left < 0) { if (tip) tip.remove(); return; }
  if (!tip) { tip = h("div", { class: "tip" }); el.append(tip); }
  const rows = [new Date(u.data[0][i] * 1000).toLocaleTimeString()];
  for (let s = 1; s < u.series.length && s <= 8; s++) {
    const v = u.data[s][i];
    if (v !== null && v !== undefined) rows.push(`${u.series[s].label}: ${fmt(v, panel.unit)}`);
  }
  tip.replaceChildren(...rows.map((r) => h("div", {}, r)));
  tip.style.left = Math.min(u.cursor.left + 60, el.clientWidth - 180) + "px";
  tip.style.top = "30px";
}

/** The buckets of a histogram (`le` series, cumulative) as a heatmap on a canvas. */
function heatmap(el, data, panel) {
  const buckets = data.series
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), values: s.values }))
    .filter((b) => !Number.isNaN(b.le))
    .sort((a, b) => a.le - b.le);
  if (!buckets.length) { statusLine(el, "No histogram buckets (series with an `le` label) in this range"); return; }
  const n = data.timestamps.length;
  const cells = buckets.map((b, k) => b.values.map((v, t) => {
    const below = k ? buckets[k - 1].values[t] : 0;
    return v === null ? null : Math.max(0, v - (below || 0));
  }));
  const max = Math.max(1e-12, ...cells.flat().filter((v) => v !== null));
  const W = Math.max(200, el.clientWidth - 4), H = 180, left = 60;
  const canvas = h("canvas", { class: "heat", width: W, height: H, "data-buckets": buckets.length });
  el.append(canvas);
  const ctx = canvas.getContext("2d");
  const cw = (W - left) / n, ch = H / buckets.length;
  for (let k = 0; k < buckets.length; k++) {
    for (let t = 0; t < n; t++) {
      const v = cells[k][t];
      if (!v) continue;
      const a = Math.log1p(v) / Math.log1p(max);
      ctx.fillStyle = `rgba(214, 39, 40, ${0.08 + 0.92 * a})`;
      ctx.fillRect(left + t * cw, H - (k + 1) * ch, Math.ceil(cw), Math.ceil(ch));
    }
    if (k % Math.ceil(buckets.length / 6) === 0) {
      ctx.fillStyle = "#6b7480";
      ctx.font = "11px sans-serif";
      ctx.fillText("≤ " + (buckets[k].le === Infinity ? "+Inf" : fmt(buckets[k].le, panel.unit)), 2, H - k * ch - 2);
    }
  }
}

function statPanel(el, data, panel) {
  const v = data.series.length ? lastValue(data.series[0].values) : null;
  if (v === null) { statusLine(el, "No data in this range"); return; }
  el.append(h("div", { class: "stat", style: { color: colourOf(panel.thresholds, v) || "inherit" } }, fmt(v, panel.unit)));
}

// A table with rows_by: a row for each value of that label, a column for
// each query (its legend), each cell the query's last value — as a word
// from its map, a label's value (label_value) or in its unit.
function pivotTable(el, data, panel) {
  const key = panel.rows_by, cols = panel.queries || [];
  const rows = new Map();
  for (const s of data.series) {
    const k = (s.labels || {})[key];
    if (k === undefined) continue;
    if (!rows.has(k)) rows.set(k, []);
    const q = cols[s.query] || {};
    const v = lastValue(s.values);
    if (v === null) continue;
    rows.get(k)[s.query] = q.label_value ? ((s.labels || {})[q.label_value] ?? "") : v;
  }
  if (!rows.size) { statusLine(el, "No data in this range"); return; }
  const cell = (q, v) => {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v;
    const word = (q.map || {})[String(v)];
    return word !== undefined ? word : fmt(v, q.unit || panel.unit);
  };
  el.append(h("table", { class: "pivot" },
    h("tr", {}, h("th", {}, key), cols.map((q) => h("th", {}, q.legend || ""))),
    [...rows.keys()].sort().map((k) => h("tr", { "data-row": k }, h("td", {}, k),
      cols.map((q, i) => h("td", { "data-col": q.legend || "" }, cell(q, rows.get(k)[i])))))));
}

function tablePanel(el, data, panel) {
  if (panel.rows_by) { pivotTable(el, data, panel); return; }
  const rows = data.series.map((s) => ({ name: s.name, v: lastValue(s.values) })).sort((a, b) => (b.v ?? -Infinity) - (a.v ?? -Infinity));
  el.append(h("table", {}, h("tr", {}, h("th", {}, "series"), h("th", { class: "num" }, "value")),
    rows.map((r) => h("tr", {}, h("td", {}, r.name), h("td", { class: "num", style: { color: colourOf(panel.thresholds, r.v) || "inherit" } }, fmt(r.v, panel.unit))))));
}

function barPanel(el, data, panel) {
  const rows = data.series.map((s) => ({ name: s.name, v: lastValue(s.values) ?? 0 })).sort((a, b) => b.v - a.v);
  const max = Math.max(1e-12, ...rows.map((r) => r.v));
  el.append(h("table", {}, rows.map((r, i) => h("tr", {},
    h("td", { style: { width: "30%" } }, r.name),
    h("td", {}, h("div", { class: "bar", style: { width: (100 * r.v / max).toFixed(1) + "%", background: colourOf(panel.thresholds, r.v) || PALETTE[i % PALETTE.length] } })),
    h("td", { class: "num" }, fmt(r.v, panel.unit))))));
}

function logRows(records) {
  return h("table", { class: "log" },
    h("tr", {}, h("th", {}, "time"), h("th", {}, "level"), h("th", {}, "service"), h("th", {}, "message"), h("th", {}, "trace")),
    records.map((r) => h("tr", { class: "logline" },
      h("td", {}, new Date(r.timestamp_ns / 1e6).toLocaleTimeString()),
      h("td", { class: "lvl-" + (r.level || "").toLowerCase() }, r.level || ""),
      h("td", {}, r.service || ""),
      h("td", { title: JSON.stringify(r.attributes || {}) }, r.message || "",
        Object.keys(r.attributes || {}).length ? h("div", { class: "muted" }, Object.entries(r.attributes).slice(0, 6).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ")) : null),
      h("td", {}, r.trace_id ? h("a", { href: `/ui/trace/${r.trace_id}`, "data-nav": true, class: "trace-link" }, r.trace_id.slice(0, 8) + "…") : ""))));
}

async function alertsPanel(el) {
  // In replay mode: what the replay had firing at the slider's time.
  const data = window.__replayFiring ? { alerts: window.__replayFiring() } : await api("/api/v1/alerts");
  const firing = (data.alerts || []).filter((a) => a.state === "firing");
  if (!firing.length) { el.append(h("div", { class: "stat", style: { color: COLOURS.green } }, "none firing")); return; }
  const by = { P0: 0, P1: 0, P2: 0 };
  for (const a of firing) by[a.severity] = (by[a.severity] || 0) + 1;
  el.append(h("div", { class: "stat" }, Object.entries(by).filter(([, n]) => n).map(([s, n]) => h("span", { class: `sev ${s}`, style: { margin: "0 4px", "font-size": "22px" } }, `${s} ${n}`))),
    h("div", {}, firing.slice(0, 4).map((a) => h("div", { class: "muted" }, `${a.labels.alertname} ${a.labels.job || a.labels.service || ""}`))));
}

async function drawPanel(el, panel, url, events, gen, init) {
  let data;
  try {
    data = await api(url, init);
  } catch (e) {
    if (gen === generation) statusLine(el, "Query failed: " + e.message, true);
    return;
  }
  if (gen !== generation) return;
  if (!performance.getEntriesByName("keel-first-panel").length) performance.mark("keel-first-panel");
  if (el._plot) { el._plot.destroy(); el._plot = null; }
  el.replaceChildren();
  try {
    if (data.type === "alerts") { await alertsPanel(el); return; }
    if (data.type === "logs") {
      if (!data.records.length) statusLine(el, "No log lines match in this range");
      else el.append(logRows(data.records));
      return;
    }
    for (const e of data.errors || []) el.append(h("div", { class: "status error" }, `Query ${e.query + 1} failed: ${e.error}`));
    for (const a of data.annotations || []) el.append(h("div", { class: `status annotation ${a.level}`, title: `query ${a.query + 1}: ${data.queries[a.query] || ""}` }, `${a.level === "warning" ? "⚠" : "ℹ"} ${a.text}`));
    const any = data.series.some((s) => s.values.some((v) => v !== null));
    if (!any) { el.append(h("div", { class: "status" }, "No data in this range")); return; }
    switch (panel.type) {
      case "timeseries": el._plot = chart(el, data, panel, events); break;
      case "stat": statPanel(el, data, panel); break;
      case "table": tablePanel(el, data, panel); break;
      case "bar": barPanel(el, data, panel); break;
      case "heatmap": heatmap(el, data, panel); break;
      default: statusLine(el, `Unknown panel type ${panel.type}`, true);
    }
  } catch (e) {
    statusLine(el, "Could not draw: " + e.message, true);
  }
}

// ---- pages -----------------------------------------------------------------

async function dashboardPage(uid) {
  const gen = generation;
  let entry, list;
  try {
    [entry, list] = await Promise.all([api(`/api/v1/dashboards/${encodeURIComponent(uid)}`), api("/api/v1/dashboards")]);
  } catch (e) {
    main.replaceChildren(h("h1", {}, "Dashboards"), h("p", { class: "error" }, e.message), await dashboardList());
    return;
  }
  if (gen !== generation) return;
  const d = entry.dashboard;
  const p = params();
  const picker = h("select", { id: "dashboard-select", onchange: (e) => navigate(`/ui/d/${e.target.value}${location.search}`) },
    list.map((x) => h("option", { value: x.uid, selected: x.uid === uid }, x.title || x.uid)));
  const head = [h("div", { style: { display: "flex", gap: "12px", "align-items": "baseline" } }, h("h1", {}, d ? d.title : uid), picker),
    d && d.description ? h("div", { class: "muted" }, d.description) : null];
  const banner = entry.error ? h("div", { class: "banner", id: "dashboard-error" }, `${entry.error}${d ? "\n(showing the last version that loaded)" : ""}`) : null;
  if (!d) { main.replaceChildren(...head, banner); return; }
  if (!p.get("range") && !p.get("from") && d.range) {
    // The file's default range, as the server writes durations ("1h", "7days").
    const key = { "1day": "24h", "2days": "2d", "7days": "7d", "1week": "7d" }[d.range] || d.range;
    if (RANGES[key]) { setParams({ range: key }); syncTimePicker(); }
  }
  // Variables.
  const vars = h("div", { class: "vars" });
  let values = {};
  if ((d.variables || []).length) {
    const q = new URLSearchParams();
    for (const v of d.variables) if (p.get(`var-${v.name}`)) q.set(`var-${v.name}`, p.get(`var-${v.name}`));
    try { values = await api(`/api/v1/dashboards/${uid}/variables?${q}`); } catch (e) { vars.append(h("span", { class: "error" }, e.message)); }
    for (const [name, { value, values: all }] of Object.entries(values)) {
      vars.append(h("label", {}, `$${name} `, h("select", { "data-var": name, onchange: (e) => { setParams({ [`var-${name}`]: e.target.value }); render(); } },
        (all.length ? all : [value]).map((x) => h("option", { value: x, selected: x === value }, x)))));
    }
  }
  const rows = [];
  const jobs = [];
  const width = Math.max(600, main.clientWidth);
  // Draw every panel for the range of the moment; live mode does it again
  // every 5 s, each panel keeping its chart until the new data is in.
  const drawAll = async () => {
    if (gen !== generation) return;
    const { start, end } = timeRange();
    const events = await timeline(start, end);
    if (gen !== generation) return;
    await Promise.all(jobs.map((j) => j(start, end, events)));
    if (gen === generation) {
      document.body.dataset.drawn = String(Date.now());
      // For `keel bench dashboard`: when the page first had every panel.
      if (!performance.getEntriesByName("keel-all-panels").length) performance.mark("keel-all-panels");
    }
  };
  scheduleRefresh(drawAll);
  rows.push(...panelRows(d, values, width, `/api/v1/dashboards/${uid}`, jobs, gen));
  const record = recordButton();
  main.replaceChildren(...[...head, record, banner, vars, ...rows].filter(Boolean));
  await drawAll();
}

/** A dashboard's rows of panels; each panel's drawing job (for a range
 * and its events) pushed on `jobs`, reading from `base` (the live API, or
 * a bundle's in replay mode). */
function panelRows(d, values, width, base, jobs, gen) {
  const rows = [];
  d.rows.forEach((row, r) => {
    const title = row.title.replace(/\$(\w+)/g, (m, n) => (values[n] ? values[n].value : m));
    const grid = h("div", { class: "row" });
    row.panels.forEach((panel, i) => {
      const body = h("div", { class: "panel-body" }, h("div", { class: "status" }, "Loading…"));
      const el = h("div", { class: "panel", "data-panel": `${r}.${i}`, "data-type": panel.type, style: { "grid-column": `span ${panel.width || 4}` } },
        h("h3", {}, h("span", {}, panel.title), panel.link ? h("a", { href: "/ui/" + panel.link, "data-nav": true }, "details →") : null), body);
      grid.append(el);
      const points = Math.min(600, Math.floor(width * (panel.width || 4) / 12 / 2));
      jobs.push((start, end, events) => {
        const step = Math.max(1000, Math.ceil((end - start) / points / 1000) * 1000);
        const q = new URLSearchParams({ start: start / 1000, end: end / 1000, step: step / 1000 });
        for (const [name, { value }] of Object.entries(values)) q.set(`var-${name}`, value);
        return drawPanel(body, panel, `${base}/panels/${r}.${i}/data?${q}`, events, gen);
      });
    });
    rows.push(h("h2", {}, title), grid);
  });
  return rows;
}

// ---- incidents -------------------------------------------------------------

/** Record the dashboard's time range as an incident bundle. */
function recordButton() {
  if (!can("editor")) return null;
  const { start, end } = timeRange();
  const stamp = new Date(end).toISOString().slice(0, 16).replace(/[-:T]/g, "");
  const name = h("input", { id: "incident-name", value: `incident-${stamp}`, size: 28 });
  const status = h("span", { id: "record-status", class: "muted" });
  const button = h("button", { id: "record-incident", onclick: async () => {
    button.disabled = true;
    status.textContent = "Recording…";
    try {
      const s = await api("/api/v1/incidents", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: name.value, from_ms: Math.round(start), to_ms: Math.round(end), reason: "dashboard" }) });
      status.replaceChildren(`Recorded ${fmt(s.bytes, "bytes")} · `, h("a", { href: `/ui/incidents/${encodeURIComponent(s.name)}`, "data-nav": true, id: "recorded-link" }, "replay it →"));
    } catch (e) {
      status.textContent = e.message;
      status.className = "error";
    } finally { button.disabled = false; }
  } }, "Record incident");
  return h("div", { class: "vars", id: "record" }, "Record this range as ", name, " ", button, " ", status);
}

async function incidentsPage() {
  const list = await api("/api/v1/incidents");
  main.replaceChildren(h("h1", {}, "Incidents"),
    h("p", { class: "muted" }, "Recorded windows (Record incident on a dashboard, keel incident record, or automatically around every P0). Open one to replay it."),
    list.length ? h("table", { id: "incident-list" }, h("tr", {}, ["incident", "window", "why", "size"].map((x) => h("th", {}, x))),
      list.map((s) => h("tr", {}, h("td", {}, h("a", { href: `/ui/incidents/${encodeURIComponent(s.name)}`, "data-nav": true }, s.name)),
        h("td", {}, `${when(s.from_ms)} – ${when(s.to_ms)}`), h("td", {}, s.reason), h("td", {}, fmt(s.bytes, "bytes")))))
      : h("div", { class: "status" }, "No incident bundles yet"));
}

function offsetOf(from, t) {
  const d = Math.max(0, t - from), m = Math.floor(d / 60000), s = ((d % 60000) / 1000).toFixed(1);
  return `+${String(m).padStart(2, "0")}:${s.padStart(4, "0")}`;
}

function eventList(id, title, events, at) {
  return h("div", { class: "panel", id, style: { "grid-column": "span 6" } }, h("h3", {}, h("span", {}, title)),
    h("div", { class: "panel-body events" }, events.length ? events.map((e) => h("div", {
      class: "event" + (e.at_ms > at ? " future" : ""), "data-kind": e.kind, "data-at": e.at_ms,
      style: { "border-left": `4px solid ${eventColour(e)}`, "padding-left": "6px", opacity: e.at_ms > at ? 0.35 : 1 },
    }, h("span", { class: "muted" }, e.offset, " "), e.explanation || e.kind)) : h("div", { class: "status" }, "Nothing")));
}

/** Replay mode: the bundle's dashboards over its window, a time slider,
 * its recorded and replayed timelines, and a what-if side by side. */
async function incidentPage(name) {
  const gen = generation;
  const base = `/api/v1/incidents/${encodeURIComponent(name)}`;
  main.replaceChildren(h("h1", {}, `Incident ${name}`), h("div", { class: "status" }, "Replaying…"));
  const [r, list] = await Promise.all([api(`${base}/replay`), api(`${base}/view/dashboards`).catch(() => [])]);
  if (gen !== generation) return;
  const hd = r.header;
  const p = params();
  const uid = p.get("dash") || (list.find((x) => x.uid === "overview") || list[0] || {}).uid;
  let at = Number(p.get("at")) || hd.to_ms;
  const events = r.replayed;
  const slider = h("input", { type: "range", id: "replay-slider", min: hd.from_ms, max: hd.to_ms, step: 1000, value: at, style: { width: "60%" } });
  const label = h("span", { id: "replay-at" }, offsetOf(hd.from_ms, at));
  const lists = h("div", { class: "row", id: "timelines" });
  const drawLists = (whatIf) => lists.replaceChildren(eventList("recorded-events", "Recorded", r.recorded, at),
    whatIf ? eventList("whatif-events", "What-if", whatIf.replayed, at) : eventList("replayed-events", "Replayed", events, at));
  let lastWhatIf = null;
  drawLists(null);
  const plots = [];
  slider.addEventListener("input", () => {
    at = Number(slider.value);
    label.textContent = offsetOf(hd.from_ms, at);
    setParams({ at });
    drawLists(lastWhatIf);
    for (const el of document.querySelectorAll(".panel-body")) if (el._plot) el._plot.redraw(false);
    for (const el of document.querySelectorAll('.panel[data-type="alerts"] .panel-body')) { el.replaceChildren(); alertsPanel(el); }
  });
  window.__replayAt = () => at;
  // The alerts firing at the slider's time, as the replay had them.
  window.__replayFiring = () => {
    const last = new Map();
    for (const e of events) if (e.kind === "alert" && e.at_ms <= at) last.set(e.subject + JSON.stringify(e.labels || {}), e);
    return [...last.values()].filter((e) => e.state === "firing").map((e) => ({ state: "firing", severity: e.severity, labels: e.labels || {} }));
  };
  const jobs = [];
  let rows = [];
  if (uid) {
    const entry = await api(`${base}/view/dashboards/${encodeURIComponent(uid)}`);
    if (entry.dashboard) rows = panelRows(entry.dashboard, {}, Math.max(600, main.clientWidth), `${base}/view/dashboards/${encodeURIComponent(uid)}`, jobs, gen);
  }
  const picker = h("select", { id: "replay-dashboard", onchange: (e) => { setParams({ dash: e.target.value }); render(); } },
    list.map((x) => h("option", { value: x.uid, selected: x.uid === uid }, x.title || x.uid)));
  const rules = h("textarea", { id: "whatif-rules", rows: 10, cols: 70, placeholder: "a rule file (groups: …) to replay instead of the recorded rules" }, r.rules_text || "");
  const policy = h("textarea", { id: "whatif-policy", rows: 10, cols: 50, placeholder: "a controller: section to replay instead of the recorded policies" });
  const diff = h("div", { id: "whatif-diff" });
  const run = h("button", { id: "whatif-run", onclick: async () => {
    run.disabled = true;
    diff.replaceChildren(h("div", { class: "status" }, "Replaying the what-if…"));
    try {
      const w = await api(`${base}/replay`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ rules: rules.value, policy: policy.value }) });
      lastWhatIf = w.what_if;
      diff.replaceChildren(h("table", {}, h("tr", {}, ["", "recorded", "what-if", ""].map((x) => h("th", {}, x))),
        (w.what_if ? w.what_if.rows : []).map((row) => h("tr", {}, row.map((c) => h("td", {}, c))))));
      drawLists(lastWhatIf);
    } catch (e) {
      diff.replaceChildren(h("div", { class: "status error" }, e.message));
    } finally { run.disabled = false; }
  } }, "Replay what-if");
  const repro = r.reproduction;
  main.replaceChildren(
    h("h1", {}, `Incident ${name}`),
    h("div", { class: "muted" }, `${when(hd.from_ms)} – ${when(hd.to_ms)} · ${hd.reason}`),
    h("div", { id: "reproduction", class: repro.ok ? "status" : "status error" }, repro.summary, ...(repro.differences || []).slice(0, 10).map((d) => h("div", { class: "muted" }, d))),
    h("div", { class: "vars" }, "At ", label, " ", slider, " ", picker),
    ...rows,
    lists,
    // A what-if replay costs the collector CPU: editors and admins only.
    ...(can("editor") ? [h("h2", {}, "What-if"),
      h("div", { class: "row" }, h("div", { style: { "grid-column": "span 7" } }, rules), h("div", { style: { "grid-column": "span 5" } }, policy)),
      run, diff] : []));
  await Promise.all(jobs.map((j) => j(hd.from_ms, hd.to_ms, events)));
  if (gen === generation) document.body.dataset.drawn = String(Date.now());
}

async function dashboardList() {
  const list = await api("/api/v1/dashboards");
  return h("table", {}, h("tr", {}, h("th", {}, "dashboard"), h("th", {}, "file"), h("th", {}, "status")),
    list.map((x) => h("tr", {}, h("td", {}, h("a", { href: `/ui/d/${x.uid}`, "data-nav": true }, x.title || x.uid)), h("td", { class: "muted" }, x.file),
      h("td", { class: x.error ? "error" : "" }, x.error || "ok"))));
}

async function logsPage() {
  const gen = generation;
  const p = params();
  const q = p.get("q") || "*";
  const input = h("input", { id: "log-query", value: q, size: 60, placeholder: "level:error AND service:shop-web AND \"timeout\"" });
  const form = h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); setParams({ q: input.value }, { push: true }); render(); } },
    input, h("button", { type: "submit" }, "Search"), h("span", { class: "muted" }, "tantivy syntax: field:value, \"phrase\", AND / OR / NOT, attributes.key:value"));
  const hist = h("div", { class: "panel", id: "log-histogram" }, h("h3", {}, "Matches over time"), h("div", { class: "status" }, "Loading…"));
  const results = h("div", { class: "panel", id: "log-results" }, h("div", { class: "status" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Logs"), form, hist, h("h2", {}, "Newest first"), results);
  const { start, end } = timeRange();
  const step = Math.max(1000, Math.ceil((end - start) / 120 / 1000) * 1000);
  const enc = encodeURIComponent(q);
  const [hr, sr] = await Promise.allSettled([
    api(`/api/v1/logs/histogram?q=${enc}&start=${start / 1000}&end=${end / 1000}&step=${step / 1000}`),
    api(`/api/v1/logs/search?q=${enc}&start=${start / 1000}&end=${end / 1000}&limit=200`),
  ]);
  if (gen !== generation) return;
  const hb = hist.lastChild;
  if (hr.status === "rejected") statusLine(hb, "Query failed: " + hr.reason.message, true);
  else if (!hr.value.buckets.some((b) => b[1] > 0)) statusLine(hb, "No log lines match in this range");
  else {
    hb.replaceChildren();
    chart(hb, { timestamps: hr.value.buckets.map((b) => b[0] * 1000), series: [{ name: "lines", values: hr.value.buckets.map((b) => b[1]) }] }, { unit: "short" }, [], { bars: true });
  }
  if (sr.status === "rejected") { statusLine(results, "Query failed: " + sr.reason.message, true); return; }
  const records = sr.value.records;
  if (!records.length) statusLine(results, "No log lines match in this range");
  else results.replaceChildren(logRows(records));
  document.body.dataset.drawn = String(Date.now());
  // Live tail: only what arrived since the newest line shown.
  let newest = records.length ? records[0].timestamp_ns / 1e6 : end;
  clearInterval(refreshTimer);
  if (p.get("live") === "1") {
    refreshTimer = setInterval(async () => {
      if (gen !== generation) return;
      try {
        const more = await api(`/api/v1/logs/search?q=${enc}&start=${(newest + 1) / 1000}&end=${Date.now() / 1000}&limit=200`);
        if (!more.records.length) return;
        newest = more.records[0].timestamp_ns / 1e6;
        const table = $("table", results) || (results.replaceChildren(logRows([])), $("table", results));
        const fresh = logRows(more.records).querySelectorAll("tr.logline");
        table.rows[0].after(...fresh);
      } catch { /* the next tick tries again */ }
    }, 2000);
  }
}

async function tracesPage() {
  const gen = generation;
  const p = params();
  const field = (name, placeholder, size = 14) => h("input", { name, value: p.get(name) || "", placeholder, size });
  const err = h("input", { type: "checkbox", name: "error", checked: p.get("error") === "true" });
  const form = h("form", { class: "search", id: "trace-search", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setParams({ service: f.get("service"), operation: f.get("operation"), min_duration: f.get("min_duration"), error: err.checked ? "true" : null }, { push: true });
    render();
  } }, field("service", "service"), field("operation", "operation", 24), field("min_duration", "min duration (100ms)"), h("label", {}, err, " errors only"), h("button", { type: "submit" }, "Find traces"));
  const out = h("div", { class: "panel", id: "trace-results" }, h("div", { class: "status" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Traces"), form, out);
  const { start, end } = timeRange();
  const q = new URLSearchParams({ start: start / 1000, end: end / 1000, limit: 100 });
  for (const k of ["service", "operation", "min_duration", "error"]) if (p.get(k)) q.set(k, p.get(k));
  try {
    const data = await api(`/api/v1/traces/search?${q}`);
    if (gen !== generation) return;
    if (!data.traces.length) { statusLine(out, "No traces match in this range"); return; }
    out.replaceChildren(h("table", {}, h("tr", {}, h("th", {}, "started"), h("th", {}, "root"), h("th", { class: "num" }, "duration"), h("th", { class: "num" }, "spans"), h("th", { class: "num" }, "errors")),
      data.traces.map((t) => h("tr", {}, h("td", {}, new Date(t.start_ns / 1e6).toLocaleTimeString()),
        h("td", {}, h("a", { href: `/ui/trace/${t.trace_id}`, "data-nav": true }, `${t.root_service}: ${t.root_operation}`)),
        h("td", { class: "num" }, fmt(t.duration_ns / 1e9, "seconds")), h("td", { class: "num" }, t.spans), h("td", { class: "num", style: { color: t.errors ? COLOURS.red : "" } }, t.errors)))));
    document.body.dataset.drawn = String(Date.now());
  } catch (e) { statusLine(out, "Search failed: " + e.message, true); }
}

async function tracePage(id) {
  const gen = generation;
  main.replaceChildren(h("h1", {}, "Trace ", h("code", {}, id)), h("div", { class: "status" }, "Loading…"));
  let t;
  try { t = await api(`/api/v1/traces/${encodeURIComponent(id)}`); } catch (e) { main.append(h("p", { class: "error" }, e.message)); return; }
  if (gen !== generation) return;
  const rows = t.spans.map((s) => {
    const left = 100 * (s.start_ns - t.start_ns) / Math.max(1, t.duration_ns);
    const width = 100 * s.duration_ns / Math.max(1, t.duration_ns);
    const err = s.status === "error" || s.status === "ERROR" || s.status === 2;
    const attrs = h("div", { class: "span-attrs", hidden: true }, JSON.stringify({ span_id: s.span_id, parent: s.parent_span_id, kind: s.span_kind, status: s.status, status_message: s.status_message, attributes: s.attributes, links: s.links }, null, 2));
    // Links to other spans (a batch's producers, a retry's first try),
    // each opening its trace; the scope (instrumentation library) named.
    const links = (Array.isArray(s.links) ? s.links : []).filter((l) => typeof l.trace_id === "string").map((l) => h("a", {
      class: "span-link", href: `/ui/trace/${encodeURIComponent(l.trace_id)}`, "data-nav": true,
      "data-trace": l.trace_id, title: `linked span ${l.span_id} of trace ${l.trace_id}`,
    }, `↗ ${l.trace_id.slice(0, 8)}…`));
    const scope = s.attributes["otel.scope.name"];
    const row = h("div", { class: "span-row", onclick: (e) => { if (!e.target.closest("a")) attrs.hidden = !attrs.hidden; } },
      h("div", { class: "span-name", style: { "padding-left": (s.depth * 14) + "px" } }, h("b", {}, s.service), " ", s.operation,
        scope ? h("span", { class: "muted span-scope" }, ` · ${scope}`) : null, ...links.map((a) => [" ", a]).flat()),
      h("div", { class: "span-track", title: fmt(s.duration_ns / 1e9, "seconds") }, h("div", { class: "span-bar" + (err ? " err" : ""), style: { left: left + "%", width: width + "%" } })),
      attrs);
    return row;
  });
  main.replaceChildren(h("h1", {}, "Trace ", h("code", {}, id)),
    h("p", { class: "muted" }, `${t.spans.length} spans · ${fmt(t.duration_ns / 1e9, "seconds")} · ${t.services.join(", ")} · started ${when(t.start_ns / 1e6)}`),
    h("div", { class: "panel waterfall", id: "waterfall" }, rows),
    h("h2", {}, "Logs written under this trace"),
    h("div", { class: "panel", id: "trace-logs" }, t.logs.length ? logRows(t.logs) : h("div", { class: "status" }, "No logs carry this trace id")));
  document.body.dataset.drawn = String(Date.now());
}

/** Does a silence's matchers (`{name, op, value}`) match these labels? */
function matches(matchers, labels) {
  return matchers.every((m) => {
    const have = labels[m.name] || "";
    if (m.op === "=") return have === m.value;
    if (m.op === "!=") return have !== m.value;
    let re;
    try { re = new RegExp("^(?:" + m.value + ")$"); } catch { return false; }
    return m.op === "=~" ? re.test(have) : !re.test(have);
  });
}

const matcherText = (m) => `${m.name}${m.op}${JSON.stringify(m.value)}`;

function matchersOf(labels) {
  return Object.entries(labels).filter(([k]) => k !== "severity").map(([k, v]) => `${k}=${JSON.stringify(v)}`);
}

/**
 * The unit of an alerting rule's value: what its annotations humanize
 * `$value` as, else what its query's metric names say.
 */
export function ruleUnit(rule) {
  const text = Object.values(rule.annotations || {}).join(" ");
  if (/\$value\s*\|\s*humanizePercentage\b/.test(text)) return "percentunit";
  if (/\$value\s*\|\s*humanizeDuration\b/.test(text)) return "seconds";
  if (/\$value\s*\|\s*humanize1024\b/.test(text)) return "bytes";
  const q = rule.query || "";
  if (/_ratio\b/.test(q)) return "percentunit";
  if (/_seconds(_bucket|_sum)?\b/.test(q) && !/_count\b/.test(q) && !q.includes("/")) return "seconds";
  if (/_bytes\b/.test(q) && !q.includes("/")) return "bytes";
  return "short";
}

async function alertsPage() {
  const gen = generation;
  const [alerts, silences, tickets, history, rules, notifications] = await Promise.allSettled([
    api("/api/v1/alerts"), api("/api/v1/silences"), api("/api/v1/tickets"),
    api(`/api/v1/alerts/history?start=${(Date.now() - 864e5) / 1000}&limit=200`),
    api("/api/v1/rules"), api("/api/v1/notifications"),
  ]);
  // Pages a receiver refused for good, and ones still being retried.
  const undelivered = notifications.status === "fulfilled"
    ? (notifications.value || []).filter((d) => d.delivered_at_ms == null && d.last_error).slice(-50).reverse()
    : [];
  const units = new Map();
  if (rules.status === "fulfilled") for (const g of rules.value.groups || []) for (const r of g.rules || []) units.set(r.name, ruleUnit(r));
  if (gen !== generation) return;
  const active = alerts.status === "fulfilled" ? alerts.value.alerts : [];
  const now = Date.now();
  const sil = silences.status === "fulfilled" ? (silences.value || []).filter((s) => s.starts_at_ms <= now && now < s.ends_at_ms) : [];
  const order = { firing: 0, pending: 1 };
  active.sort((a, b) => (order[a.state] - order[b.state]) || a.severity.localeCompare(b.severity));
  const silenced = (a) => sil.some((s) => matches(s.matchers || [], a.labels));
  const rows = active.map((a) => h("tr", { class: "alert-row", "data-alert": a.labels.alertname },
    h("td", {}, h("span", { class: `sev ${a.severity}` }, a.severity)),
    h("td", { class: `state-${a.state}` }, a.state, silenced(a) ? h("span", { class: "muted silenced" }, " · silenced") : null),
    h("td", {}, h("b", {}, a.labels.alertname), h("div", { class: "muted" }, matchersOf(a.labels).filter((m) => !m.startsWith("alertname")).join(", ")), a.annotations && a.annotations.summary ? h("div", {}, a.annotations.summary) : null),
    h("td", {}, a.firedAt ? ago(Date.parse(a.firedAt)) : `pending since ${ago(Date.parse(a.activeAt))}`),
    h("td", { class: "num", title: a.value }, fmt(Number(a.value), units.get(a.labels.alertname) || "short")),
    h("td", {}, !can("editor") ? null : [
      h("button", { class: "silence", onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api("/api/v1/silences", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ matchers: matchersOf(a.labels), duration: "2h", created_by: "dashboard", comment: "silenced from the alerts page" }) });
          render();
        } catch (err) { alert("Silence failed: " + err.message); e.target.disabled = false; }
      } }, "Silence 2h"), " ",
      a.state === "firing" ? h("button", { class: "ack", onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api("/api/v1/alerts/ack", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ matchers: matchersOf(a.labels) }) });
          e.target.textContent = "Acknowledged";
        } catch (err) { alert("Acknowledge failed: " + err.message); e.target.disabled = false; }
      } }, "Acknowledge") : null])));
  const resolved = history.status === "fulfilled" ? history.value.filter((e) => e.to === "inactive" && e.from === "firing") : [];
  // replaceChildren would print a null as "null": only elements go in.
  main.replaceChildren(...[h("h1", {}, "Alerts"),
    alerts.status === "rejected" ? h("p", { class: "error" }, alerts.reason.message) : null,
    h("div", { class: "panel", id: "alerts" }, active.length ? h("table", {}, h("tr", {}, h("th", {}, "severity"), h("th", {}, "state"), h("th", {}, "alert"), h("th", {}, "since"), h("th", { class: "num" }, "value"), h("th", {}, "")), rows) : h("div", { class: "status" }, "Nothing is firing or pending")),
    undelivered.length ? h("h2", {}, "Pages not delivered") : null,
    undelivered.length ? h("div", { class: "panel", id: "undelivered" }, h("table", {}, undelivered.map((d) => h("tr", { class: "undelivered-row" },
      h("td", {}, h("span", { class: `sev ${d.page.severity}` }, d.page.severity)),
      h("td", {}, h("b", {}, (d.page.group && d.page.group.alertname) || "page"), " to ", d.receiver || "nobody"),
      h("td", { class: d.failed_at_ms != null ? "state-firing" : "muted" }, d.failed_at_ms != null ? `refused for good ${when(d.failed_at_ms)}` : `retrying (${d.attempts} attempts)`),
      h("td", { class: "muted" }, d.last_error))))) : null,
    h("h2", {}, "Silences"),
    h("div", { class: "panel", id: "silences" }, sil.length ? h("table", {}, sil.map((s) => h("tr", { class: "silence-row" }, h("td", {}, (s.matchers || []).map(matcherText).join(", ")), h("td", { class: "muted" }, `${s.comment || ""} (${s.created_by || "?"})`), h("td", {}, "until " + when(s.ends_at_ms)),
      h("td", {}, can("editor") ? h("button", { class: "expire", onclick: async (e) => {
        try { await api(`/api/v1/silences/${s.id}`, { method: "DELETE" }); render(); } catch (err) { alert("Expire failed: " + err.message); e.target.disabled = false; }
      } }, "Expire") : null)))) : h("div", { class: "status" }, "No active silences")),
    h("h2", {}, "Resolved in the last day"),
    h("div", { class: "panel" }, resolved.length ? h("table", {}, resolved.slice(-50).reverse().map((e) => h("tr", { class: "resolved-row" }, h("td", {}, when(Date.parse(e.at))), h("td", {}, h("span", { class: `sev ${e.severity}` }, e.severity)), h("td", {}, h("b", {}, e.rule), " ", h("span", { class: "muted" }, matchersOf(e.labels || {}).filter((m) => !m.startsWith("alertname")).join(", ")))))) : h("div", { class: "status" }, "Nothing resolved")),
    h("h2", {}, "Tickets (P2)"),
    h("div", { class: "panel", id: "tickets" }, tickets.status === "fulfilled" && (tickets.value || []).length ? h("table", {}, tickets.value.slice().reverse().map((t) => h("tr", {}, h("td", {}, `#${t.id}`), h("td", {}, h("b", {}, t.labels.alertname || ""), " ", (t.annotations && t.annotations.summary) || ""), h("td", {}, `opened ${when(t.opened_at_ms)}`), h("td", {}, t.closed_at_ms ? `closed ${when(t.closed_at_ms)}` : h("b", {}, "open"))))) : h("div", { class: "status" }, "No tickets"))].filter(Boolean));
  document.body.dataset.drawn = String(Date.now());
  scheduleRefresh(() => render());
}

async function eventsPage() {
  const gen = generation;
  const p = params();
  const kind = h("input", { name: "kind", value: p.get("kind") || "", placeholder: "kinds: scale,alert", size: 22 });
  const subject = h("input", { name: "subject", value: p.get("subject") || "", placeholder: "subject (web, ShopTierDown)", size: 22 });
  const quiet = h("input", { type: "checkbox", checked: p.get("decisions") === "1" });
  const form = h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); setParams({ kind: kind.value, subject: subject.value, decisions: quiet.checked ? "1" : null }, { push: true }); render(); } },
    kind, subject, h("label", {}, quiet, " include every decision"), h("button", { type: "submit" }, "Filter"));
  const out = h("div", { class: "panel", id: "events" }, h("div", { class: "status" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Events"), h("p", { class: "muted" }, "Everything the collector and the controller recorded: alert transitions, scaling decisions with their reasons, actuator failures, and any new kind."), form, out);
  const { start, end } = timeRange();
  const q = new URLSearchParams({ start: start / 1000, end: end / 1000, limit: 2000 });
  if (p.get("kind")) q.set("kind", p.get("kind"));
  if (p.get("subject")) q.set("subject", p.get("subject"));
  if (p.get("decisions") !== "1") q.set("exclude", "decision");
  try {
    const all = await api(`/api/v1/events?${q}`);
    if (gen !== generation) return;
    if (!all.length) { statusLine(out, "No events in this range"); return; }
    out.replaceChildren(h("table", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "kind"), h("th", {}, "subject"), h("th", {}, "what happened")),
      all.slice().reverse().map((e) => h("tr", { class: "event-row", "data-kind": e.kind, style: { cursor: "pointer" }, onclick: () => showEvent(e) },
        h("td", {}, when(e.at_ms)), h("td", {}, h("span", { style: { color: eventColour(e) } }, "● "), e.kind), h("td", {}, e.subject || ""), h("td", {}, e.explanation || "")))));
    document.body.dataset.drawn = String(Date.now());
  } catch (e) { statusLine(out, "Could not read events: " + e.message, true); }
  scheduleRefresh(() => render());
}

/** The metric store's cardinality (`/api/v1/status/tsdb`): the head's
 * totals and, as bars, the metric names, label names and label pairs
 * holding the most series — where a series explosion shows first. */
async function tsdbPage() {
  const gen = generation;
  const limit = Number(params().get("limit")) || 10;
  const out = h("div", { id: "tsdb" }, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Cardinality"), h("p", { class: "muted" }, "What the metric store's head holds: the series of each metric name, the values of each label, and the label pairs in most series. A name or label growing here is where memory goes."), out);
  const d = await api(`/api/v1/status/tsdb?limit=${limit}`);
  if (gen !== generation) return;
  const s = d.headStats;
  const totals = h("table", { class: "totals" },
    h("tr", {}, h("th", {}, "series"), h("th", {}, "label pairs"), h("th", {}, "chunks"), h("th", {}, "from"), h("th", {}, "to")),
    h("tr", {}, h("td", {}, s.numSeries.toLocaleString()), h("td", {}, s.numLabelPairs.toLocaleString()), h("td", {}, s.chunkCount.toLocaleString()),
      h("td", {}, s.minTime ? when(s.minTime) : "–"), h("td", {}, s.maxTime ? when(s.maxTime) : "–")));
  const bars = (title, rows, unit) => {
    const max = Math.max(1, ...rows.map((r) => r.value));
    return h("div", { class: "panel", style: { gridColumn: "span 6" } }, h("h3", {}, title),
      rows.length ? h("table", {}, rows.map((r) => h("tr", { class: "card-row" },
        h("td", { style: { width: "40%", wordBreak: "break-all" } }, r.name),
        h("td", { style: { width: "45%" } }, h("div", { class: "bar", style: { width: `${(100 * r.value) / max}%` } })),
        h("td", { style: { textAlign: "right" } }, `${r.value.toLocaleString()}${unit}`)))) : h("div", { class: "status" }, "Nothing stored yet"));
  };
  out.replaceChildren(totals, h("div", { class: "row" },
    bars("Series by metric name", d.seriesCountByMetricName, ""),
    bars("Values by label name", d.labelValueCountByLabelName, ""),
    bars("Series by label pair", d.seriesCountByLabelValuePair, ""),
    bars("Label value bytes by label name", d.memoryInBytesByLabelName, " B")));
  document.body.dataset.drawn = String(Date.now());
}

function builderPage() {
  const p = params();
  const panel = {
    title: p.get("title") || "New panel",
    type: p.get("type") || "timeseries",
    unit: p.get("unit") || "short",
    expr: p.get("expr") || 'sum by (tier) (rate(http_server_request_duration_seconds_count[$__rate_interval]))',
    legend: p.get("legend") || "{{tier}}",
  };
  const title = h("input", { value: panel.title, id: "b-title" });
  const type = h("select", { id: "b-type" }, ["timeseries", "stat", "bar", "table", "heatmap"].map((t) => h("option", { value: t, selected: t === panel.type }, t)));
  const unit = h("select", { id: "b-unit" }, ["short", "reqps", "seconds", "percentunit", "percent", "bytes", "bytesps"].map((t) => h("option", { value: t, selected: t === panel.unit }, t)));
  const expr = h("textarea", { id: "b-expr" }, panel.expr);
  const legend = h("input", { value: panel.legend, id: "b-legend" });
  const preview = h("div", { class: "panel", id: "b-preview" }, h("div", { class: "status" }, "Press Preview"));
  const yaml = h("pre", { id: "b-yaml" }, "");
  const body = () => JSON.stringify({ title: title.value, type: type.value, unit: unit.value, queries: [{ expr: expr.value, legend: legend.value || undefined }], width: 6 });
  const run = async () => {
    setParams({ title: title.value, type: type.value, unit: unit.value, expr: expr.value, legend: legend.value });
    const gen = generation;
    const { start, end } = timeRange();
    const step = Math.max(1000, Math.ceil((end - start) / 300 / 1000) * 1000);
    const target = h("div", {});
    preview.replaceChildren(h("h3", {}, title.value), target);
    await drawPanel(target, { type: type.value, unit: unit.value, thresholds: [] },
      `/api/v1/panels/data?start=${start / 1000}&end=${end / 1000}&step=${step / 1000}`, await timeline(start, end), gen,
      { method: "POST", headers: { "content-type": "application/json" }, body: body() });
    const r = await fetch("/api/v1/panels/export", withCsrf({ method: "POST", headers: { "content-type": "application/json" }, body: body() }));
    yaml.textContent = r.ok ? await r.text() : "Not valid yet: " + ((await r.json()).error || r.status);
  };
  main.replaceChildren(h("h1", {}, "Build a panel"), h("p", { class: "muted" }, "Try a query, then paste the YAML into a row of a file in dashboards/."),
    h("div", { class: "builder" }, h("div", { class: "grid" },
      h("div", {}, h("label", {}, "Title ", title), " ", h("label", {}, "Type ", type), " ", h("label", {}, "Unit ", unit),
        h("p", {}, "PromQL"), expr, h("p", {}, h("label", {}, "Legend ", legend)), h("button", { id: "b-run", onclick: run }, "Preview")),
      h("div", {}, preview, h("h2", {}, "As YAML"), yaml))));
  if (p.get("expr")) run();
}

// ---- router ----------------------------------------------------------------

// ---- who leads (collector.ha) ----------------------------------------------

/** The header's word on a pair of collectors: whether this one leads,
 * since when and under which token, or whom it follows. Hidden for a
 * collector alone (and while nobody is logged in). */
async function leaderBadge() {
  const el = $("#leader");
  // Nobody logged in yet: nothing to ask (it would only be refused).
  if (me.login && me.user === null) { el.hidden = true; return; }
  let s;
  try { s = await (await fetch("/api/v1/status/leader")).json(); } catch { s = null; }
  const d = s && s.status === "success" ? s.data : null;
  if (!d || !d.ha) { el.hidden = true; return; }
  el.hidden = false;
  el.className = d.standing === "leader" ? "leading" : d.standing === "lost" ? "error" : "muted";
  const text = {
    leader: () => `${d.name} leads since ${when(d.since_ms)}`,
    follower: () => `${d.name} follows ${d.leader || "another collector"}`,
    starting: () => `${d.name} is joining its pair`,
    lost: () => `${d.name} does not lead: ${d.error}`,
  }[d.standing];
  el.textContent = text ? text() : d.standing;
  el.title = d.standing === "leader" ? `fencing token ${d.token}` : "only the leader evaluates rules, notifies and scales";
}

// ---- who is looking ---------------------------------------------------------

/** Read who this is; draw the header's name and log-out button. */
async function whoAmI() {
  const r = await fetch("/api/v1/session");
  const body = await r.json();
  me = body.data;
  const who = $("#who");
  if (!me.login) { who.replaceChildren(); return; }
  who.replaceChildren(...(me.user === null ? [] : [
    h("span", { id: "whoami", class: "muted" }, `${me.user} (${me.role})`), " ",
    h("button", { id: "logout", onclick: async () => {
      await api("/api/v1/logout", { method: "POST" });
      me = { ...me, user: null, csrf: null };
      await whoAmI();
      loginPage();
    } }, "Log out")]));
}

/** The login form; on success, the page the person came for. */
function loginPage() {
  clearInterval(refreshTimer);
  $("#who").replaceChildren();
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const status = h("div", { id: "login-status", class: "error" });
  const form = h("form", { id: "login", class: "panel", onsubmit: async (e) => {
    e.preventDefault();
    status.textContent = "";
    try {
      await api("/api/v1/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: user.value, password: password.value }) });
      await whoAmI();
      render();
    } catch (err) { status.textContent = err.message; }
  } },
  h("label", {}, "User ", user), " ", h("label", {}, "Password ", password), " ", h("button", { id: "login-submit", type: "submit" }, "Log in"), status);
  main.replaceChildren(h("h1", {}, "Log in to Keel"), form);
  user.focus();
}

async function render() {
  if (me.login && me.user === null) return loginPage();
  generation++;
  window.__replayAt = null;
  window.__replayFiring = null;
  clearInterval(refreshTimer);
  refreshTimer = null;
  syncTimePicker();
  const path = location.pathname.replace(/^\/ui\/?/, "");
  const [page, ...rest] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === (page || "d"));
  try {
    switch (page) {
      case "":
      case "d": {
        const uid = rest[0] ? decodeURIComponent(rest[0]) : null;
        if (!uid) {
          const list = await api("/api/v1/dashboards");
          const first = list.find((x) => x.uid === "overview") || list[0];
          if (first) { history.replaceState(null, "", `/ui/d/${first.uid}${location.search}`); return render(); }
          main.replaceChildren(h("h1", {}, "Dashboards"), h("p", { class: "muted" }, "No dashboard files found."));
          return;
        }
        return await dashboardPage(uid);
      }
      case "logs": return await logsPage();
      case "traces": return await tracesPage();
      case "trace": return await tracePage(decodeURIComponent(rest[0] || ""));
      case "alerts": return await alertsPage();
      case "events": return await eventsPage();
      case "incidents": return rest[0] ? await incidentPage(decodeURIComponent(rest[0])) : await incidentsPage();
      case "build": return builderPage();
      case "tsdb": return await tsdbPage();
      default: main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, `No page ${path}.`));
    }
  } catch (e) {
    main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, e.message));
  }
}

setInterval(leaderBadge, 5000);
whoAmI().then(() => { leaderBadge(); return render(); }, (e) => main.replaceChildren(h("h1", {}, "Keel is not answering"), h("p", { class: "error" }, e.message)));
