// The text dialog (spec 5.1 right-click, spec 15.1): type text on the phones an action would
// reach, with a variable browser (categories, recently used variables) and a live preview of
// the resolved text for the first phone. Text with variables or spintax is resolved once per
// phone by the coordinator (POST /api/variables/resolve), so each phone types its own variant;
// the action carries the template too, which a recording saves instead of the variant.

import { get, post } from "./api.js";
import { el, toast } from "./state.js";

const RECENT_KEY = "phonefarm.recentVariables";
const MAX_RECENT = 12;
let targets = [];
let categories = [];
let previewTimer = null;
let previewSeq = 0;

const dialog = () => document.getElementById("text-dialog");
const textarea = () => dialog().querySelector("textarea");
const needsResolving = (text) => /\$\{|\{[^}]*\|/.test(text);

function recent() {
  try { return JSON.parse(localStorage.getItem(RECENT_KEY)) || []; } catch { return []; }
}
function remember(text) {
  const used = text.match(/\$\{[^}]+\}/g) || [];
  if (!used.length) return;
  const list = [...new Set([...used.reverse(), ...recent()])].slice(0, MAX_RECENT);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
}

function insert(variable) {
  const ta = textarea();
  const [a, b] = [ta.selectionStart, ta.selectionEnd];
  ta.value = ta.value.slice(0, a) + variable + ta.value.slice(b);
  ta.focus();
  ta.selectionStart = ta.selectionEnd = a + variable.length;
  schedulePreview();
}

function showCategory(name) {
  const box = dialog().querySelector(".variables");
  const cat = categories.find((c) => c.name === name);
  dialog().querySelectorAll(".categories button").forEach((b) => b.classList.toggle("active", b.dataset.name === name));
  box.replaceChildren(el("div", { class: "hint" }, cat ? cat.description : ""),
    ...(cat ? cat.variables : []).map((v) => el("button", { type: "button", onclick: () => insert(v) }, v)));
}

function renderBrowser() {
  const cats = dialog().querySelector(".categories");
  cats.replaceChildren(...categories.map((c) => el("button", { type: "button", dataset: { name: c.name }, onclick: () => showCategory(c.name) }, c.name)));
  if (categories.length) showCategory(categories[0].name);
  const r = recent();
  dialog().querySelector(".recent").replaceChildren(el("span", { class: "hint" }, r.length ? "recent: " : "no recent variables"),
    ...r.map((v) => el("button", { type: "button", onclick: () => insert(v) }, v)));
}

function schedulePreview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(preview, 250);
}

async function preview() {
  const box = dialog().querySelector(".preview");
  const text = textarea().value;
  const seq = ++previewSeq;
  if (!text || !targets.length) { box.textContent = ""; return; }
  try {
    const out = await post("/api/variables/preview", { text, serials: [targets[0].serial] });
    if (seq !== previewSeq) return;
    box.classList.remove("error");
    box.textContent = `preview (${targets[0].serial}): ${out.texts[targets[0].serial]}`;
  } catch (err) {
    if (seq !== previewSeq) return;
    box.classList.add("error");
    box.textContent = err.body && err.body.offset !== undefined ? `${err.body.reason || err.message} (at character ${err.body.offset})` : err.message;
  }
}

async function typeText(text) {
  const { sendToPhones } = await import("./wall.js");
  remember(text);
  if (!needsResolving(text)) return sendToPhones(targets, () => ({ type: "text", text }), "text");
  const out = await post("/api/variables/resolve", { text, serials: targets.map((p) => p.serial) });
  // Phones with the same resolved text share one request.
  const byText = new Map();
  for (const p of targets) {
    const t = out.texts[p.serial];
    if (!byText.has(t)) byText.set(t, []);
    byText.get(t).push(p);
  }
  // Each phone types its own value; the template goes along so that a recording keeps
  // what the operator wrote and the playback resolves it per phone (issue 21.5).
  await Promise.all([...byText].map(([t, phones]) => sendToPhones(phones, () => ({ type: "text", text: t, template: text }), "text")));
}

export async function openTextDialog(phones) {
  targets = phones;
  if (!targets.length) return;
  const d = dialog();
  d.querySelector(".target").textContent = phones.length === 1 ? phones[0].serial : `${phones.length} phones`;
  d.querySelector(".preview").textContent = "";
  d.returnValue = "";
  d.showModal();
  textarea().focus();
  try {
    categories = (await get(`/api/variables?serial=${encodeURIComponent(targets[0].serial)}`)).categories;
  } catch (err) {
    categories = [];
    toast(`variables: ${err.message}`, true);
  }
  renderBrowser();
  schedulePreview();
}

export function initTextDialog() {
  textarea().addEventListener("input", schedulePreview);
  dialog().addEventListener("close", async () => {
    const text = textarea().value;
    if (dialog().returnValue !== "type" || !text) return;
    try { await typeText(text); } catch (err) { toast(`text: ${err.message}`, true); }
  });
}
