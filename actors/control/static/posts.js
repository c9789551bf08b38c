// The Posts page (issue 21.2): the posts the phones recorded (GET /api/posts, scoped by the
// server to the caller's clients' accounts), newest first with their latest metrics, and
// "#posts/<id>": one post's metrics over time (GET /api/posts/{id}/metrics: every reading
// of views, likes, comments, shares and saves) charted with the dashboard's charting
// library (uPlot, through charts.js), and its daily rows.

import { enc, get } from "./api.js";
import { TimeChart } from "./charts.js";
import { el, toast } from "./state.js";

const METRICS = [
  { name: "views", color: "#2563eb" }, { name: "likes", color: "#db2777" },
  { name: "comments", color: "#16a34a" }, { name: "shares", color: "#9333ea" }, { name: "saves", color: "#ea580c" },
];
const num = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString());
const when = (iso) => (iso ? String(iso).slice(0, 16).replace("T", " ") : "");

export async function show(root, open = null) {
  const filter = el("select", { id: "posts-account" }, el("option", { value: "" }, "every account"));
  const table = el("table", { class: "list", id: "post-list" });
  const detail = el("div", { id: "post-detail" });
  root.replaceChildren(el("h2", {}, "Posts"), el("div", { class: "toolbar" }, filter), table, detail);
  let posts = [];
  const load = async () => {
    const account = filter.value;
    try { posts = (await get(`/api/posts?limit=200${account ? `&account=${enc(account)}` : ""}`)).posts || []; } catch (err) { toast(`posts: ${err.message}`, true); posts = []; }
    const header = ["posted (UTC)", "account", "caption", "status", ...METRICS.slice(0, 3).map((m) => m.name)];
    table.replaceChildren(el("tr", {}, ...header.map((h) => el("th", {}, h))),
      ...posts.map((p) => el("tr", { class: "clickable", dataset: { post: String(p.post_id) }, onclick: () => { location.hash = `posts/${p.post_id}`; } },
        el("td", {}, when(p.posted_at)), el("td", {}, p.account || ""), el("td", { title: p.caption || "" }, (p.caption || "").slice(0, 60)),
        el("td", { class: p.status === "failed" ? "status-failed" : "" }, p.status || ""),
        ...METRICS.slice(0, 3).map((m) => el("td", { class: m.name }, num(p.latest?.[m.name]))))));
    if (!posts.length) table.append(el("tr", {}, el("td", { colspan: header.length }, "No posts yet.")));
    const known = new Set([...filter.options].map((o) => o.value));
    for (const a of [...new Set(posts.map((p) => p.account).filter(Boolean))].sort()) {
      if (!known.has(a)) filter.append(el("option", { value: a }, a));
    }
  };
  filter.onchange = load;
  await load();
  if (open) await showPost(detail, open);
}

// One chart line per metric over the union of the readings' times (a metric read at
// another moment has no value there: its line spans the gap).
export function seriesOf(samples) {
  const times = [...new Set(samples.map((s) => s.at))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const used = METRICS.filter((m) => samples.some((s) => s.metric === m.name));
  const ys = used.map(() => times.map(() => null));
  for (const s of samples) {
    const i = used.findIndex((m) => m.name === s.metric);
    if (i >= 0) ys[i][index.get(s.at)] = s.value;
  }
  return { times, used, ys };
}

async function showPost(box, id) {
  let found;
  try { found = await get(`/api/posts/${enc(id)}/metrics`); } catch (err) {
    toast(`post ${id}: ${err.message}`, true);
    box.replaceChildren(el("p", { class: "status-failed" }, err.message));
    return;
  }
  const post = found.post || {};
  const chartBox = el("div", { id: "post-chart" });
  const daily = el("table", { class: "list", id: "post-daily" });
  box.replaceChildren(el("h3", {}, `Post ${post.post_id}: ${post.account || ""}, ${when(post.posted_at)} UTC`),
    el("p", {}, post.caption || ""), chartBox, daily);
  const { times, used, ys } = seriesOf(found.samples || []);
  if (times.length) {
    const chart = new TimeChart(chartBox, used.map((m) => ({ label: m.name, color: m.color })), { height: 240 });
    await chart.set(times, ys);
  } else chartBox.append(el("p", { class: "hint" }, "No readings yet (clipshare/check_stats records them)."));
  daily.replaceChildren(el("tr", {}, el("th", {}, "day"), ...METRICS.map((m) => el("th", {}, m.name))),
    ...(found.daily || []).map((d) => el("tr", {}, el("td", {}, d.date), ...METRICS.map((m) => el("td", {}, num(d[m.name]))))));
  if (!found.daily?.length) daily.append(el("tr", {}, el("td", { colspan: METRICS.length + 1 }, "No daily rows yet.")));
}
