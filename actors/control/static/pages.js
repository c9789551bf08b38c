// The run pages (issue 7 section 5): executions (filter by status, phone, sequence; each with
// its steps and failure screenshots), schedules (create a window or recurring schedule
// against a scope or group; pause, resume, cancel) and groups (list, create, members).

import { del, enc, get, imageURL, post } from "./api.js";
import { el, toast } from "./state.js";

const fmt = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "");

// --- executions ---------------------------------------------------------------------------

// The list follows the farm: run events on the stream reload it (at most once a second) while
// the executions page is the one shown.
const RUN_EVENTS = new Set(["execution_started", "execution_finished", "execution_paused", "execution_resumed"]);
let reloadShownExecutions = null;
let reloadTimer = null;
document.addEventListener("farm-event", (e) => {
  if (!reloadShownExecutions || reloadTimer || !RUN_EVENTS.has(e.detail.name)) return;
  reloadTimer = setTimeout(() => { reloadTimer = null; reloadShownExecutions(); }, 1000);
});

export async function showExecutions(root, open = null) {
  const filters = { status: el("select", {}, el("option", { value: "" }, "any status"),
    ...["pending", "running", "paused", "completed", "failed", "cancelled", "locked"].map((s) => el("option", { value: s }, s))),
    phone: el("input", { placeholder: "phone serial" }), sequence: el("input", { placeholder: "sequence" }) };
  const table = el("table", { class: "list" });
  const detail = el("div", { id: "execution-detail" });
  let rows = [];
  const draw = () => {
    const st = filters.status.value, ph = filters.phone.value.trim(), sq = filters.sequence.value.trim();
    const shown = rows.filter((e) => (!st || e.status === st) && (!ph || (e.serial || "").includes(ph)) && (!sq || (e.sequence || "").includes(sq)));
    table.replaceChildren(el("tr", {}, ...["started", "sequence", "phone", "account", "status", "error"].map((h) => el("th", {}, h))),
      ...shown.map((e) => el("tr", { class: "clickable", onclick: () => showExecution(detail, e.execution_id) },
        el("td", {}, fmt(e.start_time)), el("td", {}, e.sequence), el("td", {}, e.serial), el("td", {}, e.account || ""),
        el("td", { class: `status-${e.status}` }, e.status), el("td", {}, e.error || e.reason || ""))));
  };
  let asked = 0;
  const load = async () => {
    // Loads overlap (the page opened while a finished run reloads it): an older answer
    // arriving last must not put back rows that were still running.
    const mine = ++asked;
    let got;
    try { got = (await get("/api/executions?limit=500")).executions; } catch (err) { toast(`executions: ${err.message}`, true); }
    if (mine !== asked) return;
    if (got) rows = got;
    draw();
  };
  Object.values(filters).forEach((f) => f.addEventListener("input", draw));
  reloadShownExecutions = () => { if (!root.hidden) load(); };
  root.replaceChildren(el("h2", {}, "Executions"),
    el("div", { class: "form-row" }, filters.status, filters.phone, filters.sequence, el("button", { onclick: load }, "Refresh")),
    table, detail);
  await load();
  if (open) await showExecution(detail, open);  // #executions/<id>, e.g. from an alert's link
}

async function showExecution(box, id) {
  let ex;
  try { ex = await get(`/api/executions/${enc(id)}`); } catch (err) { toast(err.message, true); return; }
  const shots = [];
  // The version of the sequence it ran, one click from its history ("failed since v7").
  const sequence = ex.sequence_version
    ? el("a", { href: `#history/sequence/${ex.sequence}`, class: "sequence-version" }, `${ex.sequence} v${ex.sequence_version}`)
    : ex.sequence;
  box.replaceChildren(...[el("h3", {}, `Execution ${ex.execution_id}: `, sequence, ` on ${ex.serial} — `, el("span", { class: `status-${ex.status}` }, ex.status)),
    ex.error ? el("p", { class: "status-failed" }, ex.error) : null,
    el("table", { class: "list" }, el("tr", {}, ...["step", "type", "status", "screen", "started", "ended", "error", "screenshot"].map((h) => el("th", {}, h))),
      ...(ex.steps || []).map((s) => {
        const cell = el("td", {});
        if (s.screenshot) {
          const img = el("img", { class: "shot", alt: `screenshot of ${s.path}` });
          shots.push(imageURL(s.screenshot).then((u) => { img.src = u; }).catch(() => {}));
          cell.append(img);
        }
        return el("tr", {}, el("td", {}, s.path), el("td", {}, s.type), el("td", { class: `status-${s.status === "success" ? "completed" : s.status}` }, s.status),
          el("td", {}, s.screen || ""), el("td", {}, fmt(s.start_time)), el("td", {}, fmt(s.end_time)), el("td", {}, s.error || ""), cell);
      }))].filter(Boolean));
  await Promise.all(shots);
}

// --- schedules ----------------------------------------------------------------------------

// The controls a schedule in ``status`` takes (actors/schedules.py: a finished one takes none,
// a failed one only cancel; offering them only earned a 409).
const allowed = (status, action) => !["cancelled", "completed"].includes(status)
  && (action === "cancel" || (status !== "failed" && (action === "pause") === (status !== "paused")));

export async function showSchedules(root) {
  const f = {
    sequence: el("input", { placeholder: "sequence, e.g. clipshare/post_clip", required: true }),
    target: el("input", { placeholder: "scope or group: phone:all, account:clipshare.all, group:NAME", required: true }),
    type: el("select", {}, ...["window", "recurring", "scheduled", "immediate"].map((t) => el("option", { value: t }, t))),
    start: el("input", { type: "datetime-local" }), end: el("input", { type: "datetime-local" }),
    count: el("input", { type: "number", min: 1, value: 1, style: "width:5em" }),
    cron: el("input", { placeholder: "cron (UTC), e.g. 0 9 * * *" }),
  };
  const table = el("table", { class: "list" });
  const targets = el("datalist", { id: "schedule-targets" }, el("option", { value: "phone:all" }));
  f.target.setAttribute("list", "schedule-targets");
  get("/api/groups").then((g) => targets.append(...g.groups.map((x) => el("option", { value: `group:${x.name}` })))).catch(() => {});
  const load = async () => {
    let schedules = [];
    try { schedules = (await get("/api/schedules")).schedules; } catch (err) { toast(`schedules: ${err.message}`, true); }
    table.replaceChildren(el("tr", {}, ...["id", "sequence", "target", "type", "status", "next fire", "fired", "jobs", ""].map((h) => el("th", {}, h))),
      ...schedules.map((s) => el("tr", {}, el("td", {}, s.id), el("td", {}, s.sequence), el("td", {}, s.target), el("td", {}, s.type),
        el("td", {}, s.status), el("td", {}, fmt(s.next_fire)), el("td", {}, s.fired),
        el("td", {}, Object.entries(s.jobs || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
        el("td", {}, ...["pause", "resume", "cancel"].map((a) => el("button", { onclick: () => control(s.id, a), disabled: !allowed(s.status, a) }, a))))));
  };
  const control = async (id, action) => {
    try { await post(`/api/schedules/${enc(id)}/${action}`); } catch (err) { toast(`${action}: ${err.message}`, true); }
    load();
  };
  const iso = (v) => (v ? new Date(v).toISOString() : undefined);
  const create = async () => {
    const body = { sequence: f.sequence.value.trim(), target: f.target.value.trim(), type: f.type.value };
    if (body.type === "window") Object.assign(body, { window_start: iso(f.start.value), window_end: iso(f.end.value), count: Number(f.count.value) });
    if (body.type === "recurring") body.cron = f.cron.value.trim();
    if (body.type === "scheduled") body.at = iso(f.start.value);
    try {
      const s = await post("/api/schedules", body);
      toast(`schedule ${s.id} added, next ${fmt(s.next_fire)}`);
    } catch (err) { toast(`schedule: ${err.message}${err.body.field ? ` (${err.body.field})` : ""}`, true); }
    load();
  };
  root.replaceChildren(el("h2", {}, "Schedules"),
    el("div", { class: "form-row" }, f.sequence, f.target, targets, f.type),
    el("div", { class: "form-row" }, "window / at (your local time): ", f.start, " – ", f.end, " count ", f.count, " cron ", f.cron,
      el("button", { class: "primary", onclick: create }, "Add schedule")),
    table);
  await load();
}

// --- groups -------------------------------------------------------------------------------

export async function showGroups(root) {
  const f = { name: el("input", { placeholder: "name" }), kind: el("select", {}, el("option", { value: "phone" }, "phone"), el("option", { value: "account" }, "account")),
    filter: el("input", { placeholder: "smart filter (optional), e.g. tag=batch-a" }), parent: el("input", { placeholder: "parent (optional)" }) };
  const table = el("table", { class: "list" });
  const load = async () => {
    let data = { groups: [], rules: [] };
    try { data = await get("/api/groups"); } catch (err) { toast(`groups: ${err.message}`, true); }
    table.replaceChildren(el("tr", {}, ...["name", "kind", "type", "parent", "members", ""].map((h) => el("th", {}, h))),
      ...data.groups.map((g) => {
        const member = el("input", { placeholder: "serial or platform.number@serial", style: "width:14em" });
        return el("tr", {}, el("td", {}, g.name), el("td", {}, g.kind), el("td", {}, g.type), el("td", {}, g.parent || ""),
          el("td", {}, `${g.member_count ?? "?"}: `, ...(g.members || []).map((m) => el("span", { class: "tag", title: "click to remove", onclick: () => change(del(`/api/groups/${enc(g.name)}/members/${enc(m)}`)) }, m)), g.filter ? el("code", {}, g.filter) : null),
          el("td", {}, g.type === "custom" ? el("span", {}, member, el("button", { onclick: () => change(post(`/api/groups/${enc(g.name)}/members`, { member: member.value.trim() })) }, "add")) : null,
            g.type !== "system" ? el("button", { onclick: () => change(del(`/api/groups/${enc(g.name)}`)) }, "delete") : null));
      }),
      ...data.rules.map((r) => el("tr", {}, el("td", { colspan: 6, class: "hint" }, `rule ${r.kind}${r.name ? ` ${r.name}` : ""}: ${r.groups.join(", ")}`))));
  };
  const change = async (promise) => {
    try { await promise; } catch (err) { toast(err.message, true); }
    load();
  };
  const create = () => {
    const body = { name: f.name.value.trim(), kind: f.kind.value };
    if (f.filter.value.trim()) body.filter = f.filter.value.trim();
    if (f.parent.value.trim()) body.parent = f.parent.value.trim();
    change(post("/api/groups", body));
  };
  root.replaceChildren(el("h2", {}, "Groups"),
    el("div", { class: "form-row" }, f.name, f.kind, f.filter, f.parent, el("button", { class: "primary", onclick: create }, "Create group")), table);
  await load();
}
