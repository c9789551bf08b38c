// The Accounts page (issue 21.3/21.6): each account the caller may see (GET /api/accounts,
// scoped by the server to its clients) with its health state and the reasons for it, its
// followers now and their change over 7 days, a sparkline of the follower trend (drawn with
// the dashboard's charting library, uPlot, through charts.js), its last posts (each a link
// to the Posts page's chart of it), and below, the accounts' links in bio with their clicks
// (GET /api/links).

import { get } from "./api.js";
import { loadCharts } from "./charts.js";
import { el, toast } from "./state.js";

const HEALTH_COLOR = { ok: "#15803d", watch: "#b45309", at_risk: "#b91c1c" };
const SPARK = { width: 140, height: 34 };

const fmtNumber = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString());
const signed = (n) => (n === null || n === undefined ? "" : `${n > 0 ? "+" : ""}${Number(n).toLocaleString()}`);
const day = (iso) => (iso ? String(iso).slice(0, 16).replace("T", " ") : "");

// A follower trend without axes or legend; ``series``: [[epoch seconds, value], ...].
export async function sparkline(box, series) {
  const points = (series || []).filter((p) => Array.isArray(p) && p.length === 2);
  if (points.length < 2) { box.replaceChildren(el("small", { class: "hint" }, points.length ? "one reading" : "no readings")); return null; }
  const uPlot = await loadCharts();
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const rising = ys[ys.length - 1] >= ys[0];
  box.replaceChildren();
  return new uPlot({
    width: SPARK.width, height: SPARK.height, legend: { show: false }, cursor: { show: false },
    axes: [{ show: false }, { show: false }], scales: { x: { time: true } },
    series: [{}, { stroke: rising ? "#15803d" : "#b91c1c", width: 1.5, points: { show: false } }],
  }, [xs, ys], box);
}

function healthCell(health) {
  const state = health?.state || "ok";
  const reasons = health?.reasons || [];
  return el("td", { class: "health", dataset: { state } },
    el("span", { class: "pill", style: `background:${HEALTH_COLOR[state] || "#555"};color:#fff` }, state.replace("_", " ")),
    ...reasons.map((r) => el("div", { class: "reason" }, el("small", {}, r))));
}

function postsCell(posts) {
  if (!posts?.length) return el("td", {}, el("small", { class: "hint" }, "no posts"));
  return el("td", {}, ...posts.map((p) => el("div", {},
    el("a", { href: `#posts/${p.post_id}`, title: p.caption || "" }, `${day(p.posted_at)} `),
    el("small", {}, `${(p.caption || "").slice(0, 40)}${p.status && p.status !== "active" ? ` (${p.status})` : ""}`,
      p.latest?.views !== null && p.latest?.views !== undefined ? ` · ${fmtNumber(p.latest.views)} views` : ""))));
}

export async function show(root) {
  const table = el("table", { class: "list", id: "account-list" });
  const links = el("table", { class: "list", id: "link-list" });
  root.replaceChildren(el("h2", {}, "Accounts"), table, el("h3", {}, "Links in bio"), links);
  let accounts = [];
  try { accounts = (await get("/api/accounts")).accounts || []; } catch (err) { toast(`accounts: ${err.message}`, true); }
  const header = ["account", "phone", "username", "health", "followers", "7 days", "trend", "last posts"];
  const sparks = [];
  table.replaceChildren(el("tr", {}, ...header.map((h) => el("th", {}, h))),
    ...accounts.map((a) => {
      const box = el("div", { class: "sparkline", style: `width:${SPARK.width}px;height:${SPARK.height}px` });
      sparks.push([box, a.followers_series]);
      const h = a.health || {};
      return el("tr", { dataset: { account: String(a.account_id) } },
        el("td", {}, a.account || ""), el("td", {}, a.phone || "-"), el("td", {}, a.username || ""),
        healthCell(h), el("td", { class: "followers" }, fmtNumber(h.followers)),
        el("td", {}, signed(h.followers_change_7d)), el("td", {}, box), postsCell(a.last_posts));
    }));
  if (!accounts.length) table.append(el("tr", {}, el("td", { colspan: header.length }, "No accounts.")));
  await Promise.all(sparks.map(([box, series]) => sparkline(box, series).catch((err) => {
    box.replaceChildren(el("small", { class: "hint" }, err.message));
  })));
  let rows = [];
  try { rows = (await get("/api/links")).links || []; } catch (err) { toast(`links: ${err.message}`, true); }
  links.replaceChildren(el("tr", {}, ...["account", "title", "address", "leads to", "clicks", "by source"].map((h) => el("th", {}, h))),
    ...rows.map((l) => el("tr", { dataset: { link: String(l.link_id) } },
      el("td", {}, l.account), el("td", {}, l.title || ""), el("td", {}, el("code", {}, `${location.origin}${l.path}`)),
      el("td", {}, el("a", { href: l.url, rel: "noopener noreferrer", target: "_blank" }, l.url)),
      el("td", { class: "clicks" }, fmtNumber(l.clicks)),
      el("td", {}, el("small", {}, Object.entries(l.clicks_by_source || {}).map(([s, n]) => `${s} ${n}`).join(", "))))));
  if (!rows.length) links.append(el("tr", {}, el("td", { colspan: 6 }, "No links (farm links add ACCOUNT URL).")));
}
