// The Content page (issue 21.4): what ${content.caption.NAME}, ${content.hashtags.NAME},
// ${custom.NAME} and ${content.media.next} draw from, over /api/content/*. Owns four
// tables (caption templates, hashtag sets, custom variables, the media library), a form
// under each to add or replace a row and a delete button per row. A caption template the
// server refuses shows its reason and puts the cursor at the offset it names. The server
// scopes everything to the caller's clients (the farm's shared rows are read-only for a
// tenant) and audits each change.

import { accessToken, del, enc, get, put } from "./api.js";
import { el, toast } from "./state.js";

const KINDS = {
  captions: { title: "Caption templates", value: "template", show: (r) => r.template },
  hashtags: { title: "Hashtag sets", value: "tags", show: (r) => r.tags.map((t) => `#${t}`).join(" ") },
  vars: { title: "Custom variables", value: "value", show: (r) => r.value },
};

const owner = (r) => r.account || r.client || "farm (shared)";

function deleteQuery(kind, r) {
  if (kind === "vars" && r.account) return `?account=${enc(r.account)}`;
  return r.client ? `?client=${enc(r.client)}` : "";
}

async function section(kind, root, reload) {
  const spec = KINDS[kind];
  let rows = [];
  try { rows = (await get(`/api/content/${kind}`))[kind]; } catch (err) { toast(`${kind}: ${err.message}`, true); }
  const table = el("table", { class: "list", id: `content-${kind}` },
    el("tr", {}, ...["name", "owner", spec.value, ""].map((h) => el("th", {}, h))),
    ...rows.map((r) => el("tr", { dataset: { name: r.name } }, el("td", {}, r.name), el("td", {}, owner(r)),
      el("td", {}, spec.show(r)),
      el("td", {}, el("button", { type: "button", onclick: async () => {
        try { await del(`/api/content/${kind}/${enc(r.name)}${deleteQuery(kind, r)}`); reload(); } catch (err) { toast(`delete: ${err.message}`, true); }
      } }, "delete")))));
  const name = el("input", { name: "name", placeholder: "name (A-Z a-z 0-9 _ -)" });
  const value = kind === "captions" ? el("textarea", { name: "value", rows: 2, placeholder: "{Loving|Enjoying} this ${content.hashtags.daily}" })
    : el("input", { name: "value", placeholder: kind === "hashtags" ? "travel sunset #beach" : "value" });
  const client = el("input", { name: "client", placeholder: "client (optional)" });
  const account = kind === "vars" ? el("input", { name: "account", placeholder: "account PLATFORM.NUMBER (optional)" }) : null;
  const error = el("div", { class: "error", role: "alert" });
  const save = async () => {
    error.textContent = "";
    const body = { [spec.value]: kind === "hashtags" ? value.value.split(/\s+/).filter(Boolean) : value.value };
    if (client.value.trim()) body.client = client.value.trim();
    if (account && account.value.trim()) body.account = account.value.trim();
    try {
      await put(`/api/content/${kind}/${enc(name.value.trim())}`, body);
      reload();
    } catch (err) {
      const b = err.body || {};
      error.textContent = b.offset !== undefined ? `${b.reason} (at character ${b.offset})` : err.message;
      if (b.offset !== undefined && value.setSelectionRange) { value.focus(); value.setSelectionRange(b.offset, b.offset + 1); }
    }
  };
  const form = el("form", { class: `content-form`, dataset: { kind }, onsubmit: (e) => { e.preventDefault(); save(); } },
    name, value, client, ...(account ? [account] : []), el("button", { type: "submit" }, "save"), error);
  root.append(el("h3", {}, spec.title), table, form);
}

async function mediaSection(root, reload) {
  let rows = [];
  try { rows = (await get("/api/content/media")).media; } catch (err) { toast(`media: ${err.message}`, true); }
  const table = el("table", { class: "list", id: "content-media" },
    el("tr", {}, ...["name", "owner", "kind", "size", "file", ""].map((h) => el("th", {}, h))),
    ...rows.map((r) => el("tr", { dataset: { name: r.name } }, el("td", {}, r.name), el("td", {}, owner(r)), el("td", {}, r.mime),
      el("td", {}, `${Math.ceil(r.size / 1024)} KiB`), el("td", {}, r.file),
      el("td", {}, el("button", { type: "button", onclick: async () => {
        try { await del(`/api/content/media/${r.id}`); reload(); } catch (err) { toast(`delete: ${err.message}`, true); }
      } }, "delete")))));
  const file = el("input", { type: "file", name: "file", accept: "image/*,video/*" });
  const name = el("input", { name: "name", placeholder: "name" });
  const client = el("input", { name: "client", placeholder: "client (optional)" });
  const error = el("div", { class: "error", role: "alert" });
  const upload = async () => {
    error.textContent = "";
    const f = file.files[0];
    if (!f) { error.textContent = "choose a file"; return; }
    const query = `name=${enc(name.value.trim() || f.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]/g, "_"))}`
      + (client.value.trim() ? `&client=${enc(client.value.trim())}` : "");
    // The file itself is the body (streamed by the browser); api.js sends JSON only.
    const resp = await fetch(`/api/content/media?${query}`, { method: "POST", body: f,
      headers: { "Content-Type": "application/octet-stream", Authorization: `Bearer ${accessToken()}` } });
    if (!resp.ok) { error.textContent = ((await resp.json().catch(() => ({}))).error) || `HTTP ${resp.status}`; return; }
    reload();
  };
  const form = el("form", { class: "content-form", dataset: { kind: "media" }, onsubmit: (e) => { e.preventDefault(); upload(); } },
    file, name, client, el("button", { type: "submit" }, "upload"), error);
  root.append(el("h3", {}, "Media library"), table, form);
}

export async function show(root) {
  const reload = () => show(root);
  const body = el("div", { id: "content-body" });
  root.replaceChildren(el("h2", {}, "Content"), el("p", { class: "hint" },
    "What ${content.caption.NAME}, ${content.hashtags.NAME}, ${custom.NAME} and ${content.media.next} draw from."), body);
  for (const kind of Object.keys(KINDS)) await section(kind, body, reload);
  await mediaSection(body, reload);
  root.dataset.loaded = String(Date.now());
}
