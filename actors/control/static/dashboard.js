// The dashboard (issue 19 point 4): the farm at a glance. Owns the page's panels and keeping
// them current: phones by state per node and per client (the phones main.js keeps from
// GET /api/phones, moved at once by stream events), each node's link and health (GET
// /api/nodes, then its node_health events: CPU, memory, disk, adb), executions completed vs failed, recovery attempts vs
// successes and step time percentiles over time (GET /api/stats, by=farm) and the top failing
// sequences and screens with their latest failure screenshot (GET /api/stats/top-failures).
// Every route is scoped by the server: a tenant's dashboard shows its own clients' phones
// and numbers; a panel the caller may not see says so instead of failing the page.

import { enc, get, imageURL } from "./api.js";
import { TimeChart } from "./charts.js";
import { el, onChange, state } from "./state.js";

// Time ranges offered and the bucket each is drawn in (steps GET /api/stats takes).
const RANGES = {
  "6h": { label: "last 6 hours", seconds: 6 * 3600, step: "15m", stepS: 900 },
  "24h": { label: "last 24 hours", seconds: 24 * 3600, step: "1h", stepS: 3600 },
  "7d": { label: "last 7 days", seconds: 7 * 24 * 3600, step: "1h", stepS: 3600 },
};
const STATES = ["busy", "idle", "paused", "offline", "failed"];
// As the hub reads them (actors/coordinator/hub.py PHONE_STATE).
const PHONE_STATE = { phone_up: "online", phone_resumed: "online", phone_restarted: "online",
  phone_paused: "paused", phone_failed: "failed", phone_down: "offline" };
const STATS_EVERY_MS = 60000;   // the current bucket is fetched again every minute,
const CLOSE_WAIT_MS = 10000;    // this long after the minute ended (its rollup is closed then)
const NODES_EVERY_MS = 30000;   // node rows again (health comes at once as node_health events)
const THROTTLE_MS = 3000;       // a burst of finished executions fetches once

let view = null;                // the page, once built
// What stream events said about a phone since GET /api/phones last answered (serial ->
// {state?, holder?}): the counts move at once, the next reload of the phones replaces it.
const overlay = new Map();

// A phone's dashboard state: an online phone is busy while an execution holds its lock.
function stateOf(phone) {
  const seen = overlay.get(phone.serial) || {};
  const st = seen.state ?? phone.state;
  const holder = "holder" in seen ? seen.holder : phone.lock_holder;
  if (st === "online") return holder ? "busy" : "idle";
  return st;
}

function countBy(keyOf, keys = []) {
  const rows = new Map(keys.map((k) => [k, { total: 0 }]));
  for (const phone of state.phones) {
    const key = keyOf(phone);
    if (!rows.has(key)) rows.set(key, { total: 0 });
    const row = rows.get(key);
    const st = stateOf(phone);
    row[st] = (row[st] || 0) + 1;
    row.total += 1;
  }
  return [...rows.entries()].sort(([a], [b]) => String(a).localeCompare(String(b), undefined, { numeric: true }));
}

// --- formatting ---------------------------------------------------------------------------

const gb = (bytes) => (bytes / 1e9).toFixed(1);
const pct = (used, total) => (total ? `${Math.round((100 * used) / total)} %` : "-");
const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) : "");
// A node's health cells (GET /api/nodes ``health``, the node_health event's data): [text, title] per column.
const health = {
  cpu: (h) => [`${h.cpu_pct.toFixed(0)} %`, "CPU"],
  memory: (h) => [pct(h.mem_used, h.mem_total), `${gb(h.mem_used)} of ${gb(h.mem_total)} GB memory used`],
  disk: (h) => [pct(h.disk_used, h.disk_total), `${gb(h.disk_used)} of ${gb(h.disk_total)} GB of the data folder's disk used`],
  adb: (h) => [h.adb_ok ? `ok${h.adb_rtt_ms === null || h.adb_rtt_ms === undefined ? "" : ` ${h.adb_rtt_ms.toFixed(0)} ms`}` : "down",
    `adb server ${h.adb_ok ? "answering" : "not answering"}, as of ${when(h.at)}`],
};
function healthCell(node, part) {
  let text = "-", title = "no report from this node yet";
  if (node && node.health) {
    try { [text, title] = health[part](node.health); } catch { text = "-"; }  // a field missing
  }
  return el("td", { dataset: { health: part }, title, class: part === "adb" && text === "down" ? "status-failed" : "" }, text);
}

// A panel's note: why it is empty or stale (403: not this caller's; else the error).
function note(box, err) {
  box.textContent = err ? (err.status === 403 ? "not available to you" : err.message) : "";
}

// --- the page -----------------------------------------------------------------------------

function build(root) {
  const range = el("select", { id: "dash-range", onchange: () => reload() },
    ...Object.entries(RANGES).map(([k, r]) => el("option", { value: k, selected: k === "24h" }, r.label)));
  const card = (title, ...body) => el("section", { class: "dash-card" }, el("h3", {}, title), ...body);
  const v = {
    root, range,
    nodesTable: el("table", { class: "list", id: "dash-nodes" }),
    clientsTable: el("table", { class: "list", id: "dash-clients" }),
    nodesNote: el("p", { class: "hint" }),
    statsNote: el("p", { class: "hint", id: "dash-stats-note" }),
    failuresNote: el("p", { class: "hint" }),
    failures: el("div", { id: "dash-failures" }),
    updated: el("span", { class: "hint", id: "dash-updated" }),
    boxes: { executions: el("div", { class: "chart" }), recovery: el("div", { class: "chart" }), steps: el("div", { class: "chart" }) },
    nodes: [], points: new Map(), xs: [], stats: null, shots: new Map(), loads: 0,
  };
  v.charts = {
    executions: new TimeChart(v.boxes.executions, [{ label: "completed", color: "#15803d", bars: true }, { label: "failed", color: "#b91c1c", bars: true }]),
    recovery: new TimeChart(v.boxes.recovery, [{ label: "attempts", color: "#64748b", bars: true }, { label: "succeeded", color: "#2563eb", bars: true }]),
    steps: new TimeChart(v.boxes.steps, [{ label: "p50", color: "#2563eb" }, { label: "p95", color: "#d97706" }], { unit: " ms" }),
  };
  v.titles = { executions: el("span", {}, "Executions"), recovery: el("span", {}, "Recovery") };
  root.replaceChildren(
    el("div", { class: "form-row" }, el("h2", {}, "Dashboard"), range, el("button", { onclick: () => reload() }, "Refresh"), v.updated, v.statsNote),
    el("div", { class: "dash-grid" },
      card("Phones by node", v.nodesTable, v.nodesNote),
      card("Phones by client", v.clientsTable),
      card(v.titles.executions, v.boxes.executions),
      card(v.titles.recovery, v.boxes.recovery),
      card("Step time", v.boxes.steps),
      card("Top failures", v.failures, v.failuresNote)));
  window.__dashboard = v;  // the browser test reads the charts' data
  return v;
}

export async function show(root) {
  if (!view) view = build(root);
  await reload();
}

const shown = () => view && !view.root.hidden;

async function reload() {
  drawPhones();
  await Promise.all([loadNodes(), loadStats(true), loadFailures()]);
  for (const chart of Object.values(view.charts)) chart.fit();
}

// --- phones and nodes ---------------------------------------------------------------------

function stateCells(row) {
  return STATES.map((s) => el("td", { class: `dash-n ${row[s] ? `st-${s}` : "zero"}`, dataset: { state: s } }, row[s] || 0));
}

function drawPhones() {
  if (!view) return;
  const byName = new Map(view.nodes.map((n) => [n.name, n]));
  const head = (first, ...more) => el("tr", {}, el("th", {}, first), ...STATES.map((s) => el("th", {}, s)), el("th", {}, "total"), ...more.map((h) => el("th", {}, h)));
  view.nodesTable.replaceChildren(head("node", "link", "CPU", "memory", "disk", "adb"),
    ...countBy((p) => p.node, [...byName.keys()]).map(([name, row]) => {
      const node = byName.get(name);
      return el("tr", { dataset: { key: name } }, el("td", {}, name), ...stateCells(row), el("td", { dataset: { state: "total" } }, row.total),
        el("td", { class: node && node.state !== "up" ? "status-failed" : "" }, node ? node.state : "-"),
        ...["cpu", "memory", "disk", "adb"].map((part) => healthCell(node, part)));
    }));
  view.clientsTable.replaceChildren(head("client"),
    ...countBy((p) => p.client || "(none)").map(([name, row]) =>
      el("tr", { dataset: { key: name } }, el("td", {}, name), ...stateCells(row), el("td", { dataset: { state: "total" } }, row.total))));
}

async function loadNodes() {
  try {
    view.nodes = (await get("/api/nodes")).nodes;
    note(view.nodesNote, null);
  } catch (err) { note(view.nodesNote, err); }
  drawPhones();
}

// --- history ------------------------------------------------------------------------------

// The farm's series of one /api/stats answer (by=farm: one series, "farm").
const farmSeries = (answer) => answer.series.find((s) => s.key === "farm") || answer.series[0] || { points: [] };

// ``whole``: the whole range again; else only from the newest bucket on (it is still
// filling), merged into what is drawn.
async function loadStats(whole) {
  const key = view.range.value;
  const r = RANGES[key];
  const newest = view.xs[view.xs.length - 1];
  const from = whole || newest === undefined ? key : new Date(newest * 1000).toISOString().replace(".000Z", "Z");
  let answer;
  try {
    answer = await get(`/api/stats?from=${enc(from)}&step=${r.step}&by=farm`);
  } catch (err) { note(view.statsNote, err); return; }
  if (key !== view.range.value) return;  // the range changed meanwhile: its own load draws
  note(view.statsNote, null);
  const step = answer.step_s || r.stepS;
  if (whole) view.points = new Map();
  for (const p of farmSeries(answer).points) view.points.set(Date.parse(p.t) / 1000, p);
  // Every bucket of the range, those without a point included (nothing happened then);
  // ``to`` ends the range (exclusive, rounded up to the step): the newest bucket starts before.
  const end = Math.ceil(Date.parse(answer.to) / 1000 / step) * step - step;
  const start = Math.floor((Date.now() / 1000 - r.seconds) / step) * step;
  for (const t of view.points.keys()) if (t < start) view.points.delete(t);
  const xs = new Set(view.points.keys());
  for (let t = start; t <= end; t += step) xs.add(t);
  view.xs = [...xs].sort((a, b) => a - b);
  view.stats = answer;
  view.loads += 1;
  // Counts of a bucket without a point are 0; its percentiles unknown (a gap in the line).
  const count = (f) => view.xs.map((t) => { const p = view.points.get(t); return (p && f(p)) || 0; });
  const value = (f) => view.xs.map((t) => { const p = view.points.get(t); return p ? f(p) ?? null : null; });
  const bucket = step >= 3600 ? `${step / 3600} h` : `${step / 60} min`;
  view.titles.executions.textContent = `Executions per ${bucket === "1 h" ? "hour" : bucket}: completed vs failed`;
  view.titles.recovery.textContent = `Recovery per ${bucket === "1 h" ? "hour" : bucket}: attempts vs succeeded`;
  try {
    await Promise.all([
      view.charts.executions.set(view.xs, [count((p) => p.executions?.completed), count((p) => p.executions?.failed)]),
      view.charts.recovery.set(view.xs, [count((p) => p.recovery?.attempts), count((p) => p.recovery?.succeeded)]),
      view.charts.steps.set(view.xs, [value((p) => p.step_ms?.p50), value((p) => p.step_ms?.p95)]),
    ]);
  } catch (err) { note(view.statsNote, err); return; }  // the charting library did not load
  view.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// --- top failures -------------------------------------------------------------------------

// The failure's screenshot as an image (object URLs kept while the failure is listed).
function shot(path) {
  if (!path) return el("span", { class: "hint" }, "no screenshot");
  const img = el("img", { class: "shot dash-shot", alt: `screenshot ${path}` });
  if (!view.shots.has(path)) view.shots.set(path, imageURL(path));
  view.shots.get(path).then((u) => { img.src = u; }).catch(() => { img.replaceWith(el("span", { class: "hint" }, "screenshot gone")); });
  return img;
}

function failureRows(kind, rows) {
  const head = el("tr", {}, ...[kind, "failures", "last failure", "reason", "screenshot"].map((h) => el("th", {}, h)));
  return el("table", { class: "list", dataset: { kind } }, head, ...rows.map((r) => {
    const last = r.last || {};
    const name = kind === "sequence" ? r.sequence : r.screen;
    const count = kind === "sequence" && r.executions ? `${r.failures} of ${r.executions}` : String(r.failures);
    const where = [last.serial, last.step, kind === "sequence" && last.screen ? `on ${last.screen}` : null].filter(Boolean).join(" · ");
    return el("tr", { dataset: { key: name || "" } }, el("td", {}, name || "(none)"), el("td", {}, count),
      el("td", {}, when(last.at), el("br"), el("small", { title: last.execution_id || "" }, where)),
      el("td", { class: "status-failed" }, last.reason || ""), el("td", {}, shot(last.screenshot)));
  }));
}

async function loadFailures() {
  let answer;
  try {
    answer = await get(`/api/stats/top-failures?since=${enc(view.range.value)}&limit=10`);
  } catch (err) { note(view.failuresNote, err); return; }
  note(view.failuresNote, null);
  const listed = new Set([...answer.sequences, ...answer.screens].map((r) => r.last && r.last.screenshot).filter(Boolean));
  for (const [path, url] of view.shots) {
    if (!listed.has(path)) { view.shots.delete(path); url.then((u) => URL.revokeObjectURL(u)).catch(() => {}); }
  }
  view.failures.replaceChildren(answer.sequences.length ? failureRows("sequence", answer.sequences)
    : el("p", { class: "hint" }, "No failed executions in this range."));
  if (answer.screens.length) view.failures.append(failureRows("screen", answer.screens));
}

// --- live ---------------------------------------------------------------------------------

// A fetch at most every THROTTLE_MS, however many events ask for it.
function throttled(fn) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; if (shown()) fn(); }, THROTTLE_MS);
  };
}
const refreshHistory = throttled(() => { loadStats(false); loadFailures(); });
const refreshNodes = throttled(loadNodes);

document.addEventListener("farm-event", (e) => {
  const { name, event } = e.detail;
  if (event && event.serial && (name in PHONE_STATE || name === "lock_taken" || name === "lock_freed")) {
    const seen = overlay.get(event.serial) || {};
    if (name in PHONE_STATE) seen.state = PHONE_STATE[name];
    else if (name === "lock_taken") seen.holder = (event.data && event.data.execution_id) || true;
    else seen.holder = null;
    overlay.set(event.serial, seen);
    if (shown()) drawPhones();
  }
  if (!shown()) return;
  if (name === "execution_finished") refreshHistory();
  if (name === "node_health" && event && event.node) {
    // A node's health report (every 5 s): that row's health, no request.
    const node = view.nodes.find((n) => n.name === event.node);
    if (node) { node.health = event.data; drawPhones(); }
  }
  if (name === "node_up" || name === "node_down") refreshNodes();
  if (name === "overflow") { refreshNodes(); refreshHistory(); }
});

onChange((what) => {
  if (what !== "phones") return;
  overlay.clear();  // the phones as the server has them now
  if (shown()) drawPhones();
});

// The coordinator closes a minute's rollup a few seconds after the minute ends: fetch the
// current bucket again just after each close, so a finished execution shows within seconds.
function everyMinute() {
  const wait = STATS_EVERY_MS - (Date.now() % STATS_EVERY_MS) + CLOSE_WAIT_MS;
  setTimeout(() => { if (shown()) { loadStats(false); loadFailures(); } everyMinute(); }, wait);
}
everyMinute();
setInterval(() => { if (shown()) loadNodes(); }, NODES_EVERY_MS);
