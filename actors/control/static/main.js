// The console's entry: loads the phones, draws the command panel, wires the toolbar, the
// pages and the status stream. Every change goes through the public REST API.

import { del, enc, get, openStream, post } from "./api.js";
import { initLogin } from "./login.js";
import { changed, el, numberOf, onChange, scopeOf, selectedPhones, state, stats, toast } from "./state.js";
import { initTextDialog } from "./textdialog.js";
import { allScreensChanged, initWall, keyPress, renderWall, screenChanged } from "./wall.js";

const pages = {
  wall: null,
  dashboard: () => import("./dashboard.js"),
  unknown: () => import("./unknown.js"),
  executions: () => import("./pages.js").then((m) => ({ show: m.showExecutions })),
  schedules: () => import("./pages.js").then((m) => ({ show: m.showSchedules })),
  groups: () => import("./pages.js").then((m) => ({ show: m.showGroups })),
  alerts: () => import("./alerts.js"),
  reports: () => import("./reports.js"),
  apps: () => import("./apps.js"),
  accounts: () => import("./accounts.js"),
  posts: () => import("./posts.js"),
  content: () => import("./content.js"),
  history: () => import("./history.js"),
};

// --- phones -------------------------------------------------------------------------------

let reloadTimer = null;
export async function loadPhones() {
  try {
    const { phones } = await get("/api/phones");
    state.phones = phones.sort((a, b) => a.serial.localeCompare(b.serial, undefined, { numeric: true }));
    for (const s of [...state.selected]) if (!phones.some((p) => p.serial === s)) state.selected.delete(s);
    changed("phones");
  } catch (err) {
    toast(`phones: ${err.message}`, true);
  }
}
function reloadSoon() { clearTimeout(reloadTimer); reloadTimer = setTimeout(loadPhones, 250); }

async function loadRegistry() {
  try {
    const { phones } = await get("/api/phones/registry");
    state.registry = new Map(phones.map((p) => [p.serial, p]));
  } catch { /* no farm database: serials only */ }
}

function matches(p) {
  const text = document.getElementById("filter-text").value.trim().toLowerCase();
  const st = document.getElementById("filter-state").value;
  const node = document.getElementById("filter-node").value;
  const tag = document.getElementById("filter-tag").value;
  if (st && p.state !== st) return false;
  if (node && p.node !== node) return false;
  if (tag && !(p.tags || []).includes(tag)) return false;
  if (!text) return true;
  const reg = state.registry.get(p.serial) || {};
  return [p.serial, p.node, p.state, p.last_screen, reg.phone_number, ...(p.tags || [])].some((v) => v && String(v).toLowerCase().includes(text));
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const current = select.value;
  const first = select.options[0];
  select.replaceChildren(first, ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(current) ? current : "";
}

function renderPanel() {
  const body = document.querySelector("#phone-list tbody");
  body.replaceChildren(...state.phones.filter(matches).map((p) => {
    const reg = state.registry.get(p.serial) || {};
    return el("tr", { class: state.selected.has(p.serial) ? "selected" : "", dataset: { serial: p.serial },
      onclick: (e) => {
        if (e.ctrlKey || e.metaKey) state.selected.has(p.serial) ? state.selected.delete(p.serial) : state.selected.add(p.serial);
        else state.selected = new Set([p.serial]);
        changed("selection");
      } },
    el("td", {}, numberOf(p.serial)),
    el("td", { title: p.serial }, reg.phone_number ? `${reg.phone_number} ` : "", el("small", {}, p.serial)),
    el("td", {}, p.node), el("td", {}, p.state),
    el("td", {}, ...(p.tags || []).map((t) => el("span", { class: "tag" }, t))));
  }));
  fillSelect("filter-node", [...new Set(state.phones.map((p) => p.node))].sort());
  fillSelect("filter-tag", [...new Set(state.phones.flatMap((p) => p.tags || []))].sort());
  document.getElementById("selection-count").textContent = `${state.selected.size} selected`;
}

onChange(() => { renderPanel(); renderWall(); });

// --- panel buttons ------------------------------------------------------------------------

function bindPanel() {
  for (const id of ["filter-text", "filter-state", "filter-node", "filter-tag"]) {
    document.getElementById(id).addEventListener("input", renderPanel);
  }
  document.getElementById("select-all").onclick = () => { state.selected = new Set(state.phones.filter(matches).map((p) => p.serial)); changed("selection"); };
  document.getElementById("select-none").onclick = () => { state.selected = new Set(); changed("selection"); };
  document.getElementById("select-tag").onclick = () => {
    const tag = document.getElementById("filter-tag").value || document.getElementById("tag-name").value.trim();
    if (!tag) { toast("choose a tag in the filter (or type one)", true); return; }
    state.selected = new Set(state.phones.filter((p) => (p.tags || []).includes(tag)).map((p) => p.serial));
    changed("selection");
  };
  const tagAll = async (add) => {
    const tag = document.getElementById("tag-name").value.trim();
    const phones = selectedPhones();
    if (!tag || !phones.length) { toast("type a tag and select phones", true); return; }
    try {
      await Promise.all(phones.map((p) => add ? post(`/api/phones/${enc(p.serial)}/tags`, { tag }) : del(`/api/phones/${enc(p.serial)}/tags/${enc(tag)}`)));
      toast(`${add ? "tagged" : "untagged"} ${phones.length} phone(s) ${tag}`);
    } catch (err) { toast(`tag: ${err.message}`, true); }
    loadPhones();
  };
  document.getElementById("tag-add").onclick = () => tagAll(true);
  document.getElementById("tag-remove").onclick = () => tagAll(false);
  document.querySelectorAll(".keys button").forEach((b) => { b.onclick = () => keyPress(b.dataset.key); });

  let recording = null;
  const recState = document.getElementById("rec-state");
  document.getElementById("rec-start").onclick = async () => {
    const phones = selectedPhones();
    if (!phones.length) { toast("select the phones to record on (the first leads)", true); return; }
    const body = { scope: scopeOf(phones.map((p) => p.serial)), name: document.getElementById("rec-name").value.trim() };
    const app = document.getElementById("rec-app").value.trim();
    if (app) body.app = app;
    try {
      recording = await post("/api/record/start", body);
      recState.textContent = `recording ${body.name} on ${recording.lead} (${recording.recording_id})`;
      document.getElementById("rec-start").disabled = true;
      document.getElementById("rec-stop").disabled = false;
    } catch (err) { toast(`record: ${err.message}`, true); }
  };
  document.getElementById("rec-stop").onclick = async () => {
    if (!recording) return;
    try {
      const out = await post("/api/record/stop", { recording_id: recording.recording_id });
      recState.textContent = `saved ${out.path} (${out.sequence.steps.length} steps)`;
    } catch (err) { toast(`record stop: ${err.message}`, true); recState.textContent = ""; }
    recording = null;
    document.getElementById("rec-start").disabled = false;
    document.getElementById("rec-stop").disabled = true;
  };

  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
    state.mode = document.querySelector("input[name=mode]:checked").value;
    document.body.classList.toggle("mode-action", state.mode === "action");
    document.getElementById("mode-hint").textContent = state.mode === "action"
      ? "On a screen: click = tap, hold = long tap, drag = swipe, right-click = text. Goes to every selected phone."
      : "Click selects, drag selects a range, Ctrl+click toggles.";
  }));
  document.getElementById("edit-screen").onclick = async () => {
    const phone = selectedPhones()[0];
    if (!phone) { toast("select a phone whose screen to edit", true); return; }
    const editor = await import("./editor.js");
    showPage("editor");
    editor.openEditor({ serial: phone.serial, screen: phone.last_screen });
  };
}

// --- pages and stream ---------------------------------------------------------------------

export async function showPage(route) {
  // "#executions/<id>" (the links in alerts): a page and what it opens.
  const [name, ...rest] = route.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${name}`; });
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  if (pages[name]) (await pages[name]()).show(document.getElementById(`page-${name}`), arg);
  if (name === "wall") renderWall();
}

const PHONE_EVENTS = new Set(["phone_up", "phone_down", "phone_paused", "phone_resumed", "phone_failed", "phone_restarted",
  "lock_taken", "lock_freed", "app_changed", "account_changed", "screen_changed", "phone_tags", "node_up", "node_down"]);

function onEvent(name, ev) {
  if (name === "thumbnail" && ev.serial) {
    stats.thumbnailEvents += 1;
    const p = state.phones.find((x) => x.serial === ev.serial);
    if (p && ev.data && ev.data.width && !p.screen_size) p.screen_size = [ev.data.width, ev.data.height];
    screenChanged(ev.serial);
    return;
  }
  if (name === "overflow") allScreensChanged();  // thumbnail events were among the dropped
  if (PHONE_EVENTS.has(name) || name === "overflow") reloadSoon();
  document.dispatchEvent(new CustomEvent("farm-event", { detail: { name, event: ev } }));
}

async function start() {
  initWall();
  initTextDialog();
  bindPanel();
  await initLogin();  // first: a login link in the hash, then who is here
  import("./alerts.js").then((m) => m.initBell());  // the header's unread notifications
  window.addEventListener("hashchange", () => showPage(location.hash.slice(1) || "wall"));
  await loadPhones();
  loadRegistry().then(() => changed("registry"));
  openStream(onEvent, (up) => {
    const pill = document.getElementById("stream-state");
    pill.className = `pill ${up ? "on" : "off"}`;
    if (up) { reloadSoon(); allScreensChanged(); }
  });
  showPage(location.hash.slice(1) || "wall");
}

start();
