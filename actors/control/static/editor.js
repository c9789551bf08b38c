// Edit mode (spec 5.3, 6.2): on one frame (a phone's current screen or a queued unknown
// screen) draw, move, resize and delete validation regions and action boxes, name them, set
// the OCR flag / expected text and the linked state, and save the screen to the registry
// (PUT /api/registry/apps/{app}/screens/{screen}: the server cuts the crops from the same
// frame, validates the app, saves atomically and audits). A discovery proposal arrives
// pre-drawn and is approved with the edits (POST /api/discovery/{id}/approve).

import { enc, get, imageURL, post, put } from "./api.js";
import { el, toast } from "./state.js";
import { historyPanel } from "./history.js";

const HANDLE = 8;          // px on the canvas: grab a corner within this to resize
const MIN_BOX = 4;         // frame px
let ed = null;             // the open editor's state

const page = () => document.getElementById("page-editor");

// source: {serial} | {unknown: entry} ; proposal: a discovery proposal to pre-draw ;
// app/screen/kind: what to save as (screen "clipshare/feed" style labels are split).
export async function openEditor({ serial = null, unknown = null, proposal = null, screen = null } = {}) {
  const frameURL = serial ? `/api/phones/${enc(serial)}/screen` : unknown.url;
  page().replaceChildren(el("p", { class: "hint" }, "loading the frame…"));  // never a stale form
  let registry = { apps: [] };
  try { registry = await get("/api/registry"); } catch (err) { toast(`registry: ${err.message}`, true); }
  const img = new Image();
  try {
    img.src = await imageURL(frameURL);
    await img.decode();
  } catch (err) { toast(`frame: ${err.message}`, true); return; }
  let app = proposal?.app || unknown?.app || null;
  let name = proposal?.name || "";
  let kind = proposal?.kind || "state";
  if (screen && screen !== "unknown" && screen.includes("/")) {
    const [a, rest] = screen.split("/");
    app = a;
    if (rest.startsWith("interrupt:")) { kind = "interrupt"; name = rest.slice(10); } else { name = rest; }
  }
  // A queued screen names the package in front; the registry names the app.
  const byPackage = registry.apps.find((a) => a.package && a.package === app);
  if (byPackage) app = byPackage.name;
  if (!app && registry.apps.length) app = registry.apps.find((a) => a.name !== "global")?.name || registry.apps[0].name;
  ed = { serial, unknown, proposal, registry, img, boxes: [], active: -1, tool: "region", drag: null };
  render({ app, name, kind, description: proposal?.description || "" });
  if (proposal) {
    loadBoxes(proposal.regions || [], proposal.actions || []);
  } else if (name) {
    await loadExisting();
  }
  draw();
}

function appInfo() {
  const name = page().querySelector("[name=app]").value;
  return ed.registry.apps.find((a) => a.name === name) || { name, screen_size: [ed.img.naturalWidth, ed.img.naturalHeight], states: [], interrupts: [] };
}

// Registry coordinates are in the app's screen_size space; boxes here are in frame pixels.
function scaleXY() {
  const [sw, sh] = appInfo().screen_size || [ed.img.naturalWidth, ed.img.naturalHeight];
  return [ed.img.naturalWidth / sw, ed.img.naturalHeight / sh];
}

function loadBoxes(regions, actions) {
  const [kx, ky] = scaleXY();
  const box = (c) => [c[0] * kx, c[1] * ky, c[2] * kx, c[3] * ky];
  ed.boxes = [
    ...regions.map((r) => ({ type: "region", name: r.name, c: box(r.coordinates), ocr_enabled: !!r.ocr_enabled, expected_text: r.expected_text || "" })),
    ...actions.map((a) => ({ type: "action", name: a.name, c: box(a.coordinates), action_type: a.action_type || "tap", linked_state: a.linked_state || "", navigation: a.navigation !== false })),
  ];
  ed.active = -1;
  renderTable();
}

async function loadExisting() {
  const form = page();
  const app = form.querySelector("[name=app]").value;
  const name = form.querySelector("[name=screen]").value.trim();
  const kind = form.querySelector("[name=kind]").value;
  try {
    const data = await get(`/api/registry/apps/${enc(app)}`);
    const screen = (kind === "interrupt" ? data.interrupts : data.states)[name];
    if (!screen) { toast(`${app}: no ${kind} ${name} yet: draw it`); return; }
    form.querySelector("[name=description]").value = screen.description || "";
    form.querySelector("[name=handler]").value = screen.handler || "";
    loadBoxes(screen.validation_regions || [], screen.actions || []);
    draw();
    showHistory(app, name);
  } catch (err) { toast(`load: ${err.message}`, true); }
}

// The screen's versions under the form: who changed it, why, the diff, going back (a
// revert loads the screen as it is again).
function showHistory(app, name) {
  page().querySelector("#history-panel")?.remove();
  page().querySelector(".editor-side")?.append(historyPanel("screen", `${app}/${name}`, {
    onReverted: async () => { await loadExisting(); },
  }));
}

function render(initial) {
  const apps = ed.registry.apps.map((a) => a.name);
  if (initial.app && !apps.includes(initial.app)) apps.push(initial.app);
  const canvas = el("canvas", { id: "editor-canvas" });
  const side = el("div", { class: "editor-side" },
    el("h3", {}, ed.proposal ? `Proposal ${ed.proposal.id}` : ed.unknown ? `Unknown screen ${ed.unknown.id}` : `Screen of ${ed.serial}`),
    el("div", { class: "form-row" },
      el("label", {}, "app ", el("select", { name: "app" }, ...apps.map((a) => el("option", { value: a, selected: a === initial.app }, a)))),
      el("label", {}, "kind ", el("select", { name: "kind" }, ...["state", "interrupt"].map((k) => el("option", { value: k, selected: k === initial.kind }, k)))),
      el("label", {}, "name ", el("input", { name: "screen", value: initial.name, list: "editor-screens", placeholder: "screen_name" })),
      el("datalist", { id: "editor-screens" }),
      el("button", { type: "button", onclick: loadExisting }, "Load")),
    el("div", { class: "form-row" }, el("input", { type: "text", name: "description", value: initial.description, placeholder: "description" })),
    el("div", { class: "form-row" },
      el("label", {}, "handler (interrupts) ", el("input", { name: "handler", placeholder: "action name" })),
      el("label", {}, "reason ", el("input", { name: "reason", placeholder: "why this change", value: "edited in the web console" }))),
    el("div", { class: "form-row" },
      el("label", {}, el("input", { type: "radio", name: "tool", value: "region", checked: true }), " draw region"),
      el("label", {}, el("input", { type: "radio", name: "tool", value: "action" }), " draw action box"),
      el("span", { class: "hint" }, "drag on empty space draws; drag a box moves it; drag a corner resizes; Delete removes")),
    el("table", { class: "list", id: "editor-boxes" }),
    el("div", { class: "form-row" },
      el("button", { type: "button", class: "primary", id: "editor-save", onclick: save }, ed.proposal ? "Approve with these edits" : "Save to registry"),
      ed.proposal ? el("button", { type: "button", onclick: discard }, "Discard proposal") : null,
      el("button", { type: "button", onclick: close }, "Close")),
    el("div", { id: "editor-result" }));
  page().replaceChildren(el("div", { class: "editor-canvas-wrap" }, canvas), side);
  page().querySelectorAll("input[name=tool]").forEach((r) => r.addEventListener("change", () => { ed.tool = r.value; }));
  page().querySelector("[name=app]").addEventListener("change", fillScreens);
  page().querySelector("[name=kind]").addEventListener("change", fillScreens);
  fillScreens();
  const maxH = Math.max(300, window.innerHeight - 90);
  const scale = Math.min(maxH / ed.img.naturalHeight, 560 / ed.img.naturalWidth);
  canvas.width = Math.round(ed.img.naturalWidth * scale);
  canvas.height = Math.round(ed.img.naturalHeight * scale);
  ed.scale = scale;
  ed.canvas = canvas;
  bindCanvas(canvas);
  renderTable();
}

function fillScreens() {
  const info = appInfo();
  const kind = page().querySelector("[name=kind]").value;
  page().querySelector("#editor-screens").replaceChildren(...((kind === "interrupt" ? info.interrupts : info.states) || []).map((s) => el("option", { value: s })));
}

function renderTable() {
  const table = page().querySelector("#editor-boxes");
  if (!table) return;
  const states = appInfo().states || [];
  table.replaceChildren(el("tr", {}, ...["", "name", "details", ""].map((h) => el("th", {}, h))),
    ...ed.boxes.map((b, i) => {
      const set = (k) => (e) => { b[k] = e.target.type === "checkbox" ? e.target.checked : e.target.value; draw(); };
      const details = b.type === "region"
        ? el("span", {}, el("label", {}, el("input", { type: "checkbox", checked: b.ocr_enabled, onchange: set("ocr_enabled") }), " OCR "),
            el("input", { type: "text", value: b.expected_text, placeholder: "expected text", oninput: set("expected_text"), style: "width:9em" }))
        : el("span", {}, el("select", { onchange: set("action_type") }, ...["tap", "long_tap", "swipe_up", "swipe_down", "swipe_left", "swipe_right"].map((t) => el("option", { value: t, selected: t === b.action_type }, t))),
            " → ", el("select", { onchange: set("linked_state") }, el("option", { value: "" }, "(no linked state)"),
              ...states.map((s) => el("option", { value: s, selected: s === b.linked_state }, s))),
            // Off for actions that do more than move (post, log in, switch account): go_to never takes them.
            el("label", { title: "go_to may take this action on its way to another screen" },
              el("input", { type: "checkbox", checked: b.navigation !== false, onchange: set("navigation") }), " go_to"));
      return el("tr", { class: i === ed.active ? "active" : "", onclick: () => { ed.active = i; draw(); highlightRow(); } },
        el("td", {}, b.type === "region" ? "region" : "action"),
        el("td", {}, el("input", { type: "text", value: b.name, oninput: set("name"), "aria-label": "box name" })),
        el("td", {}, details),
        el("td", {}, el("button", { type: "button", onclick: (e) => { e.stopPropagation(); remove(i); } }, "✕")));
    }));
}

function highlightRow() {
  page().querySelectorAll("#editor-boxes tr").forEach((tr, i) => tr.classList.toggle("active", i - 1 === ed.active));
}

function remove(i) {
  ed.boxes.splice(i, 1);
  ed.active = -1;
  renderTable();
  draw();
}

function draw() {
  if (!ed || !ed.canvas) return;
  const ctx = ed.canvas.getContext("2d");
  const s = ed.scale;
  ctx.drawImage(ed.img, 0, 0, ed.canvas.width, ed.canvas.height);
  ed.boxes.forEach((b, i) => {
    const [x1, y1, x2, y2] = b.c.map((v) => v * s);
    const color = b.type === "region" ? "#22c55e" : "#f97316";
    ctx.lineWidth = i === ed.active ? 3 : 2;
    ctx.strokeStyle = color;
    ctx.fillStyle = b.type === "region" ? "rgba(34,197,94,.15)" : "rgba(249,115,22,.15)";
    ctx.fillRect(x1, y1, x2 - x1, y2 - y1);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = color;
    ctx.font = "12px sans-serif";
    ctx.fillText(b.name || "(unnamed)", x1 + 3, Math.max(12, y1 - 3));
    if (i === ed.active) for (const [hx, hy] of [[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) ctx.fillRect(hx - 4, hy - 4, 8, 8);
  });
}

function hit(px, py) {
  // Corners of the active box first (resize), then any box from the top (move).
  const s = ed.scale;
  if (ed.active >= 0) {
    const c = ed.boxes[ed.active].c;
    const corners = [[0, 1], [2, 1], [0, 3], [2, 3]];
    for (const [ix, iy] of corners) {
      if (Math.abs(c[ix] * s - px) <= HANDLE && Math.abs(c[iy] * s - py) <= HANDLE) return { i: ed.active, mode: "resize", ix, iy };
    }
  }
  for (let i = ed.boxes.length - 1; i >= 0; i--) {
    const [x1, y1, x2, y2] = ed.boxes[i].c.map((v) => v * s);
    if (px >= x1 && px <= x2 && py >= y1 && py <= y2) return { i, mode: "move" };
  }
  return null;
}

function bindCanvas(canvas) {
  const pos = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  const W = () => ed.img.naturalWidth, H = () => ed.img.naturalHeight;
  const clamp = (v, max) => Math.min(Math.max(v, 0), max);
  canvas.addEventListener("pointerdown", (e) => {
    const [px, py] = pos(e);
    canvas.setPointerCapture(e.pointerId);
    const found = hit(px, py);
    if (found) {
      ed.active = found.i;
      ed.drag = { ...found, start: [px / ed.scale, py / ed.scale], orig: [...ed.boxes[found.i].c] };
    } else {
      const fx = px / ed.scale, fy = py / ed.scale;
      const kind = ed.tool;
      const n = ed.boxes.filter((b) => b.type === kind).length + 1;
      ed.boxes.push(kind === "region" ? { type: "region", name: `region_${n}`, c: [fx, fy, fx, fy], ocr_enabled: false, expected_text: "" }
        : { type: "action", name: `action_${n}`, c: [fx, fy, fx, fy], action_type: "tap", linked_state: "", navigation: true });
      ed.active = ed.boxes.length - 1;
      ed.drag = { i: ed.active, mode: "resize", ix: 2, iy: 3, created: true };
    }
    draw();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!ed.drag) return;
    const [px, py] = pos(e);
    const fx = clamp(px / ed.scale, W()), fy = clamp(py / ed.scale, H());
    const b = ed.boxes[ed.drag.i];
    if (ed.drag.mode === "move") {
      const [dx, dy] = [fx - ed.drag.start[0], fy - ed.drag.start[1]];
      const o = ed.drag.orig;
      // Moved as a whole, never past the frame's edges.
      const within = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
      const mx = within(dx, -o[0], W() - o[2]), my = within(dy, -o[1], H() - o[3]);
      b.c = [o[0] + mx, o[1] + my, o[2] + mx, o[3] + my];
    } else {
      b.c[ed.drag.ix] = fx;
      b.c[ed.drag.iy] = fy;
    }
    draw();
  });
  canvas.addEventListener("pointerup", () => {
    if (!ed.drag) return;
    const b = ed.boxes[ed.drag.i];
    b.c = [Math.min(b.c[0], b.c[2]), Math.min(b.c[1], b.c[3]), Math.max(b.c[0], b.c[2]), Math.max(b.c[1], b.c[3])];
    if (ed.drag.created && (b.c[2] - b.c[0] < MIN_BOX || b.c[3] - b.c[1] < MIN_BOX)) { ed.boxes.splice(ed.drag.i, 1); ed.active = -1; }
    ed.drag = null;
    renderTable();
    draw();
  });
  document.addEventListener("keydown", onKey);
}

function onKey(e) {
  if (!ed || page().hidden || e.key !== "Delete" || ed.active < 0) return;
  if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  remove(ed.active);
}

// The PUT body of the shared registry contract.
export function screenBody() {
  const form = page();
  const [kx, ky] = scaleXY();
  const [sw, sh] = appInfo().screen_size || [ed.img.naturalWidth, ed.img.naturalHeight];
  const coords = (c) => [Math.max(0, Math.round(c[0] / kx)), Math.max(0, Math.round(c[1] / ky)),
                         Math.min(sw, Math.round(c[2] / kx)), Math.min(sh, Math.round(c[3] / ky))];
  const handler = form.querySelector("[name=handler]").value.trim();
  return {
    kind: form.querySelector("[name=kind]").value,
    description: form.querySelector("[name=description]").value,
    handler: handler || null,
    frame: ed.serial ? { serial: ed.serial } : { unknown_screen: ed.unknown.id },
    regions: ed.boxes.filter((b) => b.type === "region").map((b) => ({ name: b.name, coordinates: coords(b.c), ocr_enabled: !!b.ocr_enabled, expected_text: b.expected_text || null })),
    actions: ed.boxes.filter((b) => b.type === "action").map((b) => ({ name: b.name, coordinates: coords(b.c), action_type: b.action_type, linked_state: b.linked_state || null, navigation: b.navigation !== false })),
    reason: form.querySelector("[name=reason]").value || "edited in the web console",
  };
}

async function save() {
  const form = page();
  const app = form.querySelector("[name=app]").value;
  const screen = form.querySelector("[name=screen]").value.trim();
  const out = form.querySelector("#editor-result");
  if (!screen) { out.textContent = "name the screen first"; return; }
  const body = screenBody();
  try {
    const result = ed.proposal
      ? await post(`/api/discovery/${enc(ed.proposal.id)}/approve`, { ...body, app, name: screen })
      : await put(`/api/registry/apps/${enc(app)}/screens/${enc(screen)}`, body);
    out.textContent = `saved ${app}/${screen} (registry version ${String(result.version || "?").slice(0, 12)})`;
    out.className = "status-completed";
    toast(out.textContent);
    showHistory(app, screen);  // the new version on top
  } catch (err) {
    out.textContent = `not saved: ${err.message}${err.body.field ? ` (${err.body.field})` : ""}`;
    out.className = "status-failed";
  }
}

async function close() {
  const { showPage } = await import("./main.js");
  location.hash = ed.unknown ? "unknown" : "wall";
  showPage(ed.unknown ? "unknown" : "wall");
}

async function discard() {
  try {
    await post(`/api/discovery/${enc(ed.proposal.id)}/discard`);
    toast(`proposal ${ed.proposal.id} discarded`);
    close();
  } catch (err) { toast(`discard: ${err.message}`, true); }
}
