// The Reports page (the clients' daily reports, issue 19.5): the list (GET /api/reports,
// scoped by the server to the caller's clients) and "#reports/<id>", one report's HTML. The
// API answers only a bearer token, so neither the report page nor its screenshots open in a
// plain tab or a mail client; this page fetches the HTML with the token, fetches each image
// the same way and swaps in a data: URL, and shows the result in an iframe sandboxed without
// scripts (srcdoc: the report is the server's escaped HTML, but it stays inert anyway).
// A link to a failed step's screenshot leads to that execution's page in the console.

import { enc, get, request } from "./api.js";
import { el, toast } from "./state.js";

const fmt = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "");

export async function show(root, open = null) {
  const table = el("table", { class: "list", id: "report-list" });
  const detail = el("div", { id: "report-detail" });
  root.replaceChildren(el("h2", {}, "Reports"), table, detail);
  let rows = [];
  try { rows = (await get("/api/reports?limit=100")).reports; } catch (err) { toast(`reports: ${err.message}`, true); }
  table.replaceChildren(el("tr", {}, ...["day", "client", "kind", "title", "made", "sent"].map((h) => el("th", {}, h))),
    ...rows.map((r) => el("tr", { class: "clickable", dataset: { id: String(r.id) }, onclick: () => { location.hash = `reports/${r.id}`; } },
      el("td", {}, r.day), el("td", {}, r.client || ""), el("td", {}, r.kind), el("td", {}, r.title),
      el("td", {}, fmt(r.created_at)), el("td", { title: r.send_error || "" }, r.sent_at ? fmt(r.sent_at) : (r.send_error ? "failed" : "")))));
  if (!rows.length) table.append(el("tr", {}, el("td", { colspan: 6 }, "No reports yet.")));
  if (open) await showReport(detail, open);
}

// The API path of ``url`` (an absolute link of the report starts with --public-url, which
// may differ from this page's address, e.g. behind a proxy), or null for any other link.
function apiPath(url) {
  let u;
  try { u = new URL(url, location.href); } catch { return null; }
  const at = u.pathname.indexOf("/api/");
  return at < 0 ? null : u.pathname.slice(at) + u.search;
}

async function dataURL(path) {
  const blob = await (await request("GET", path, undefined, { raw: true })).blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// The report's HTML made viewable here: images inlined (fetched with the token), links to
// the API turned into console links (a screenshot: its execution's page) or plain text.
async function forConsole(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  await Promise.all([...doc.querySelectorAll("img[src]")].map(async (img) => {
    const path = apiPath(img.getAttribute("src"));
    img.removeAttribute("loading");  // no lazy loading in a frame that cannot scroll us
    if (!path) return;
    try { img.src = await dataURL(path); } catch (err) { img.removeAttribute("src"); img.alt = `${img.alt} (${err.message})`; }
  }));
  for (const a of doc.querySelectorAll("a[href]")) {
    const path = apiPath(a.getAttribute("href"));
    if (!path) continue;
    const execution = /^\/api\/executions\/([^/?]+)/.exec(path);
    if (execution) { a.href = `${location.origin}${location.pathname}#executions/${execution[1]}`; a.target = "_top"; } else a.removeAttribute("href");
  }
  return "<!DOCTYPE html>\n" + doc.documentElement.outerHTML;
}

async function showReport(box, id) {
  let html;
  try {
    html = await (await request("GET", `/api/reports/${enc(id)}.html`, undefined, { raw: true })).text();
  } catch (err) { toast(`report ${id}: ${err.message}`, true); box.replaceChildren(el("p", { class: "status-failed" }, err.message)); return; }
  const frame = el("iframe", { id: "report-frame", title: `report ${id}`,
    // No scripts, no same origin: only a click on a link may move this tab (to the console).
    sandbox: "allow-top-navigation-by-user-activation" });
  frame.srcdoc = await forConsole(html);
  box.replaceChildren(el("p", {}, el("a", { href: "#reports" }, "All reports")), frame);
  await new Promise((resolve) => { frame.addEventListener("load", resolve, { once: true }); });
}
