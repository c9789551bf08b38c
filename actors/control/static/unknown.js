// The unknown-screens queue (spec 5.2, 6.2, 6.3): every queued frame no registered screen
// matched, with the discovery proposal for it (name, description, regions and actions the AI
// suggested) when there is one. Edit opens the frame in edit mode with the proposal
// pre-drawn; approve and discard act on the proposal as it stands.

import { enc, get, imageURL, post } from "./api.js";
import { el, toast } from "./state.js";

let container = null;

export async function show(root) {
  container = root;
  root.replaceChildren(el("h2", {}, "Unknown screens"), el("p", { class: "hint" }, "loading…"));
  let entries = [];
  let proposals = [];
  try { entries = (await get("/api/unknown-screens")).unknown_screens; } catch (err) { toast(`unknown screens: ${err.message}`, true); }
  try { proposals = (await get("/api/discovery")).proposals || []; } catch { /* no discovery on this coordinator */ }
  const byScreen = new Map(proposals.filter((p) => p.status !== "discarded" && p.status !== "approved").map((p) => [p.unknown_screen, p]));
  const cards = entries.map((entry) => card(entry, byScreen.get(entry.id)));
  root.replaceChildren(el("h2", {}, `Unknown screens (${entries.length})`),
    el("button", { onclick: () => show(root) }, "Refresh"),
    entries.length ? el("div", { class: "unknown-grid" }, ...cards) : el("p", {}, "The queue is empty."));
}

function card(entry, proposal) {
  const img = el("img", { alt: entry.id });
  imageURL(entry.url).then((u) => { img.src = u; }).catch(() => {});
  const serials = entry.serials || (entry.serial ? [entry.serial] : []);
  return el("div", { class: "unknown-card", dataset: { id: entry.id } }, img,
    el("div", {}, el("b", {}, entry.app || "(no app)"), ` · seen ${entry.seen || 1}× · ${entry.status || ""}`),
    el("div", { class: "hint" }, `after ${entry.previous_screen || "?"} on ${serials.join(", ")}`),
    proposal ? el("div", {}, "proposal: ", el("b", {}, proposal.name), ` (${proposal.kind || "state"}) — ${proposal.description || ""}`) : el("div", { class: "hint" }, "no proposal yet"),
    el("div", { class: "form-row" },
      el("button", { onclick: () => edit(entry, proposal) }, proposal ? "Review / edit" : "Edit"),
      proposal ? el("button", { onclick: () => act(proposal, "approve") }, "Approve") : null,
      proposal ? el("button", { onclick: () => act(proposal, "discard") }, "Discard") : null));
}

async function edit(entry, proposal) {
  const editor = await import("./editor.js");
  const { showPage } = await import("./main.js");
  await showPage("editor");
  editor.openEditor({ unknown: entry, proposal });
}

async function act(proposal, verb) {
  try {
    await post(`/api/discovery/${enc(proposal.id)}/${verb}`);
    toast(`proposal ${proposal.name} ${verb === "approve" ? "approved" : "discarded"}`);
  } catch (err) { toast(`${verb}: ${err.message}`, true); }
  if (container) show(container);
}

// A new unknown screen or proposal (or one resolved elsewhere) redraws the open queue.
let redraw = null;
document.addEventListener("farm-event", (e) => {
  if (!["unknown_screen", "discovery_proposed", "discovery_resolved"].includes(e.detail.name)) return;
  if (!container || container.hidden) return;
  clearTimeout(redraw);
  redraw = setTimeout(() => show(container), 500);
});
