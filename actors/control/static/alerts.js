// Alerts and notifications (issue 19 point 3). Owns the header's bell (the caller's unread
// notifications, kept current by a poll and by the stream's notification and alert events)
// and the Alerts page: the console's notifications (mark read), the alerts with Ack, the
// rules with Silence, and the channels' outbox (super users; others are told it is not
// theirs). Every list is scoped by the server to the caller's clients.

import { enc, get, post } from "./api.js";
import { el, toast } from "./state.js";

const POLL_MS = 30000;
const LIVE = new Set(["notification", "alert_fired", "alert_resolved", "alert_channel_failed", "alert_channel_ok"]);
const fmt = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
let shown = null;  // the page's reload while it is built
let timer = null;

function links(map) {
  return el("span", {}, ...Object.entries(map || {}).map(([label, url]) =>
    el("a", { href: url, target: url.includes("/#") ? "_self" : "_blank", class: "alert-link" }, label)));
}

export async function refreshBell() {
  const count = document.getElementById("bell-count");
  if (!count) return;
  try {
    const answer = await get("/api/notifications?unread=1&limit=1");
    count.textContent = answer.unread ? String(answer.unread) : "";
    count.hidden = !answer.unread;
  } catch { /* not logged in yet, or no alerting on this endpoint: the bell stays quiet */ }
}

export function initBell() {
  const bell = document.getElementById("bell");
  if (!bell) return;
  bell.addEventListener("click", () => { location.hash = "alerts"; });
  document.addEventListener("farm-event", (e) => {
    if (!LIVE.has(e.detail.name)) return;
    clearTimeout(timer);
    timer = setTimeout(() => { refreshBell(); if (shown) shown(); }, 300);
  });
  setInterval(refreshBell, POLL_MS);
  refreshBell();
}

export async function show(root) {
  const boxes = { notes: el("div"), alerts: el("div"), rules: el("div"), channels: el("div") };
  const firingOnly = el("input", { type: "checkbox" });
  const load = async () => {
    await Promise.all([drawNotes(boxes.notes, load), drawAlerts(boxes.alerts, firingOnly.checked, load),
      drawRules(boxes.rules, load), drawChannels(boxes.channels)]);
    refreshBell();
  };
  firingOnly.addEventListener("change", load);
  shown = () => { if (!root.hidden) load(); };
  root.replaceChildren(el("h2", {}, "Alerts and notifications"),
    el("h3", {}, "Notifications"), boxes.notes,
    el("h3", {}, "Alerts ", el("label", { class: "small" }, firingOnly, " firing only")), boxes.alerts,
    el("h3", {}, "Rules"), boxes.rules,
    el("h3", {}, "Channels"), boxes.channels);
  await load();
}

async function drawNotes(box, reload) {
  let answer;
  try { answer = await get("/api/notifications?limit=50"); } catch (err) { box.replaceChildren(el("p", {}, err.message)); return; }
  const readAll = el("button", { onclick: async () => {
    try { await post("/api/notifications/read", { all: true }); } catch (err) { toast(err.message, true); }
    reload();
  } }, "Mark all read");
  box.replaceChildren(el("div", { class: "form-row" }, `${answer.unread} unread `, readAll),
    el("table", { class: "list", id: "notification-list" },
      el("tr", {}, ...["time", "kind", "client", "title", "links"].map((h) => el("th", {}, h))),
      ...answer.notifications.map((n) => el("tr", { class: n.read ? "" : "unread", title: n.text },
        el("td", {}, fmt(n.created_at)), el("td", {}, n.kind), el("td", {}, n.client || "(farm)"),
        el("td", {}, n.title), el("td", {}, links(n.links))))));
}

async function drawAlerts(box, firing, reload) {
  let answer;
  try { answer = await get(`/api/alerts?limit=100${firing ? "&state=firing" : ""}`); } catch (err) { box.replaceChildren(el("p", {}, err.message)); return; }
  const ack = async (id) => {
    try { await post(`/api/alerts/${id}/ack`, {}); toast(`alert ${id} acked`); } catch (err) { toast(err.message, true); }
    reload();
  };
  box.replaceChildren(el("table", { class: "list", id: "alert-list" },
    el("tr", {}, ...["id", "state", "rule", "subject", "since", "resolved", "acked", "title", "links", ""].map((h) => el("th", {}, h))),
    ...answer.alerts.map((a) => el("tr", { title: a.text },
      el("td", {}, String(a.id)), el("td", { class: a.state === "firing" ? "status-failed" : "status-completed" }, a.state),
      el("td", {}, a.rule), el("td", {}, a.subject), el("td", {}, fmt(a.since)), el("td", {}, fmt(a.resolved_at)),
      el("td", {}, a.acked_by || ""), el("td", {}, a.title), el("td", {}, links(a.links)),
      el("td", {}, a.state === "firing" && !a.acked_by ? el("button", { onclick: () => ack(a.id) }, "Ack") : "")))));
}

async function drawRules(box, reload) {
  let answer;
  try { answer = await get("/api/alerts/rules"); } catch (err) { box.replaceChildren(el("p", {}, err.message)); return; }
  const silence = async (name, span) => {
    try {
      const out = await post(`/api/alerts/rules/${enc(name)}/silence`, { for: span });
      toast(out.silenced_until ? `${name} silenced until ${fmt(out.silenced_until)}` : `${name}: silence ended`);
    } catch (err) { toast(err.message, true); }
    reload();
  };
  const common = new Set(["rule_id", "name", "kind", "client", "source", "enabled", "repeat", "channels", "silenced_until", "silenced_by"]);
  box.replaceChildren(el("table", { class: "list", id: "rule-list" },
    el("tr", {}, ...["rule", "kind", "client", "from", "fields", "repeat", "silenced until", ""].map((h) => el("th", {}, h))),
    ...answer.rules.map((r) => el("tr", {},
      el("td", {}, r.name), el("td", {}, r.kind), el("td", {}, r.client || "(farm)"), el("td", {}, r.source),
      el("td", {}, Object.entries(r).filter(([k, v]) => !common.has(k) && v !== null).map(([k, v]) => `${k}=${v}`).join(", ")),
      el("td", {}, r.repeat || "never"),
      el("td", {}, fmt(r.silenced_until)),
      el("td", {}, el("button", { onclick: () => silence(r.name, "2h") }, "Silence 2h"), " ",
        r.silenced_until ? el("button", { onclick: () => silence(r.name, "0s") }, "Unsilence") : "")))));
}

async function drawChannels(box) {
  let answer;
  try { answer = await get("/api/alerts/channels"); } catch (err) {
    box.replaceChildren(el("p", {}, err.status === 403 ? "Channels are the farm's: super users see them." : err.message));
    return;
  }
  box.replaceChildren(el("table", { class: "list", id: "channel-list" },
    el("tr", {}, ...["channel", "type", "pending", "delivered", "expired", "last delivered", "last error"].map((h) => el("th", {}, h))),
    ...answer.channels.map((c) => el("tr", {},
      el("td", {}, c.name), el("td", {}, c.type), el("td", { class: c.failing ? "status-failed" : "" }, String(c.pending)),
      el("td", {}, String(c.delivered)), el("td", {}, String(c.expired)), el("td", {}, fmt(c.last_delivered_at)),
      el("td", { class: "status-failed" }, c.last_error || "")))));
}
