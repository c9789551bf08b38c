// The Apps page (issue 20 point 4). Owns the library's table (GET /api/apks), the inventory
// matrix (GET /api/apps/inventory: the caller's phones x the library's apps, each cell the
// installed version, a cell whose version differs from the phone's pin highlighted) and
// installing a version on the phones ticked in the matrix (POST /api/apps/install) with one
// progress bar per phone, moved by the stream's app_install_* events and by
// GET /api/apps/installs/{id} until every phone is done.

import { enc, get, post } from "./api.js";
import { el, toast } from "./state.js";

const LIVE = new Set(["app_install_progress", "app_install_state", "app_install_finished", "apps_inventory"]);
let current = null;  // { installId, bars: {serial: {bar, label}} }
let reload = null;

function versionsOf(apks) {
  // One entry per app version (the library lists files: base, splits, OBBs).
  const by = new Map();
  for (const f of apks) {
    const key = `${f.app}\u0000${f.version_code}`;
    const v = by.get(key) || { app: f.app, package: f.package, version: f.version_name, code: f.version_code, files: 0, size: 0 };
    v.files += 1;
    v.size += f.size;
    by.set(key, v);
  }
  return [...by.values()].sort((a, b) => a.app.localeCompare(b.app) || b.code - a.code);
}

function drawLibrary(box, versions) {
  if (!versions.length) { box.replaceChildren(el("p", { class: "muted" }, "The library is empty: farm apks add FILE.")); return; }
  box.replaceChildren(el("table", { id: "apk-library" },
    el("tr", {}, ["App", "Package", "Version", "Code", "Files", "Size"].map((h) => el("th", {}, h))),
    versions.map((v) => el("tr", {}, el("td", {}, v.app), el("td", {}, v.package), el("td", {}, v.version),
      el("td", {}, String(v.code)), el("td", {}, String(v.files)), el("td", {}, `${(v.size / 1048576).toFixed(1)} MB`)))));
}

function drawMatrix(box, inv, selected) {
  const cell = new Map(inv.inventory.map((r) => [`${r.serial}\u0000${r.package}`, r]));
  const drift = new Map(inv.drift.map((d) => [`${d.serial}\u0000${d.package}`, d]));
  const all = el("input", { type: "checkbox", title: "all phones" });
  const boxes = inv.phones.map((serial) => {
    const b = el("input", { type: "checkbox", class: "app-phone", dataset: { serial } });
    b.checked = selected.has(serial);
    b.addEventListener("change", () => { if (b.checked) selected.add(serial); else selected.delete(serial); });
    return b;
  });
  all.addEventListener("change", () => boxes.forEach((b) => { b.checked = all.checked; b.dispatchEvent(new Event("change")); }));
  box.replaceChildren(el("table", { id: "app-matrix" },
    el("tr", {}, el("th", {}, all), el("th", {}, "Phone"), inv.apps.map((a) => el("th", { title: a.package }, a.app))),
    inv.phones.map((serial, i) => el("tr", { dataset: { serial } }, el("td", {}, boxes[i]), el("td", {}, serial),
      inv.apps.map((a) => {
        const key = `${serial}\u0000${a.package}`;
        const row = cell.get(key);
        const d = drift.get(key);
        const text = row ? `${row.version_name || "?"} (${row.version_code})` : "-";
        return el("td", { class: d ? "drift" : "", title: d ? `pinned ${d.pinned}` : "" }, text);
      })))));
}

function drawProgress(box, answer) {
  const bars = {};
  box.replaceChildren(el("h3", {}, `Install ${answer.install_id}: ${answer.app} ${answer.version || ""}`),
    el("table", { id: "install-progress" }, answer.phones.map((serial) => {
      const bar = el("progress", { max: "100", value: "0" });
      const label = el("span", { class: "install-state" }, "pending");
      bars[serial] = { bar, label };
      return el("tr", { dataset: { serial } }, el("td", {}, serial), el("td", {}, bar), el("td", {}, label));
    })));
  current = { installId: answer.install_id, bars };
}

function moveBar(serial, phone) {
  const slot = current && current.bars[serial];
  if (!slot) return;
  if (phone.bytes_total) slot.bar.value = Math.round((100 * phone.bytes_sent) / phone.bytes_total);
  if (phone.state === "ok") slot.bar.value = 100;
  slot.label.textContent = phone.state === "failed" ? `failed: ${phone.reason || ""}` : phone.state || phone.stage || "";
  slot.label.className = `install-state ${phone.state || ""}`;
}

async function follow(installId) {
  while (current && current.installId === installId) {
    const view = await get(`/api/apps/installs/${enc(installId)}`);
    for (const [serial, phone] of Object.entries(view.phones)) moveBar(serial, phone);
    if (view.finished) { if (reload) reload(); return; }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export async function show(root) {
  const selected = new Set();
  const library = el("div");
  const matrix = el("div");
  const progress = el("div", { id: "install-box" });
  const appSelect = el("select", { id: "install-app" });
  const downgrade = el("input", { type: "checkbox", id: "install-downgrade" });
  const button = el("button", { id: "install-button" }, "Install to selected");
  let versions = [];
  const load = async () => {
    try {
      const [{ apks }, inv] = await Promise.all([get("/api/apks"), get("/api/apps/inventory")]);
      versions = versionsOf(apks);
      const chosen = appSelect.value;
      appSelect.replaceChildren(...versions.map((v) => el("option", { value: `${v.app}@${v.version}` }, `${v.app} ${v.version} (${v.code})`)));
      if (chosen) appSelect.value = chosen;
      drawLibrary(library, versions);
      drawMatrix(matrix, inv, selected);
    } catch (err) { toast(`apps: ${err.message}`, true); }
  };
  reload = () => { if (!root.hidden) load(); };
  button.addEventListener("click", async () => {
    const serials = [...selected].sort();
    if (!serials.length || !appSelect.value) { toast("tick phones in the matrix and pick a version", true); return; }
    const [app, version] = appSelect.value.split("@");
    try {
      const answer = await post("/api/apps/install", { app, version, scope: `phone:${serials.join(",")}`, allow_downgrade: downgrade.checked });
      drawProgress(progress, answer);
      follow(answer.install_id);
    } catch (err) { toast(`install: ${err.message}`, true); }
  });
  root.replaceChildren(el("h2", {}, "Apps"),
    el("h3", {}, "Library"), library,
    el("h3", {}, "Phones and versions"), matrix,
    el("div", { class: "install-form" }, appSelect, el("label", { class: "small" }, downgrade, " allow downgrade"), button),
    progress);
  await load();
}

document.addEventListener("farm-event", (e) => {
  const { name, event } = e.detail;
  if (!LIVE.has(name) || !event) return;
  const data = event.data || {};
  if (name === "apps_inventory") { if (reload && !current) reload(); return; }
  if (!current || data.install_id !== current.installId) return;
  if (name === "app_install_progress") moveBar(event.serial, { bytes_sent: data.bytes_sent, bytes_total: data.bytes_total, stage: data.stage });
  else if (name === "app_install_state") moveBar(event.serial, { state: data.state, reason: data.reason });
  else if (name === "app_install_finished") moveBar(event.serial, { state: data.status === "ok" ? "ok" : "failed", reason: data.reason });
});
