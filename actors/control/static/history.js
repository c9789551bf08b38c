// Definitions' history (issue 23): a definition's versions with author and reason, the
// diff of a version with the one before it (a screen's moved regions with both reference
// crops side by side) and revert with a reason. `historyPanel` is the block edit mode and
// the history page show; `show` is the page `#history/<kind>/<name>` (the execution page links
// its sequence's version there).

import { enc, get, post } from "./api.js";
import { el, toast } from "./state.js";

const KINDS = ["sequence", "workflow", "schedule", "screen", "caption"];
const fmt = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+/, "").slice(0, 19) : "");
const who = (author) => (author ? String(author).split(":").pop() : "(on disk)");
const base = (kind, name) => `/api/definitions/${enc(kind)}/${name.split("/").map(enc).join("/")}`;

// One definition's versions: a table (newest first), a reason box for revert, a diff area.
// ``onReverted(head)`` runs after a revert was saved (the editor reloads its screen).
export function historyPanel(kind, name, { onReverted = null, client = null } = {}) {
  const box = el("div", { class: "history", id: "history-panel" });
  const query = client ? `?client=${enc(client)}` : "";
  const reason = el("input", { name: "revert-reason", placeholder: "why go back (required to revert)" });
  const table = el("table", { class: "list", id: "history-versions" });
  const diffBox = el("div", { id: "history-diff" });
  const load = async () => {
    let out;
    try { out = await get(`${base(kind, name)}/versions${query}`); } catch (err) {
      table.replaceChildren(el("tr", {}, el("td", {}, `no history: ${err.message}`)));
      return;
    }
    table.replaceChildren(el("tr", {}, ...["version", "when (UTC)", "who", "reason", ""].map((h) => el("th", {}, h))),
      ...out.versions.map((v, i) => el("tr", { dataset: { version: v.version } },
        el("td", {}, `v${v.version}`), el("td", {}, fmt(v.created_at)), el("td", {}, who(v.author)),
        el("td", {}, v.reason || ""),
        el("td", {},
          i < out.versions.length - 1 ? el("button", { type: "button", class: "history-diff",
            onclick: () => showDiff(kind, name, out.versions[i + 1].version, v.version, query, diffBox) }, "diff") : null,
          i > 0 ? el("button", { type: "button", class: "history-revert", onclick: () => revert(v.version) }, `revert to v${v.version}`) : null))));
  };
  const revert = async (version) => {
    if (!reason.value.trim()) { toast("give a reason to revert", true); reason.focus(); return; }
    try {
      const head = await post(`${base(kind, name)}/revert${query}`, { version, reason: reason.value.trim() });
      toast(`${kind} ${name}: v${head.version} saved, equal to v${version}`);
      reason.value = "";
      await load();
      if (onReverted) await onReverted(head);
    } catch (err) { toast(`revert: ${err.message}`, true); }
  };
  box.append(el("h3", {}, `History of ${kind} ${name}`), table,
    el("div", { class: "form-row" }, el("label", {}, "reason ", reason)), diffBox);
  box.reload = load;
  load();
  return box;
}

async function showDiff(kind, name, from, to, query, box) {
  let diff;
  try { diff = await get(`${base(kind, name)}/diff?from=${from}&to=${to}${query ? `&${query.slice(1)}` : ""}`); } catch (err) {
    toast(`diff: ${err.message}`, true); return;
  }
  const value = (v) => (v === undefined ? "" : JSON.stringify(v));
  const rows = diff.changes.map((c) => el("tr", { class: `diff-${c.op}` }, el("td", {}, c.op), el("td", {}, c.path),
    el("td", {}, value(c.was)), el("td", {}, value(c.value))));
  const parts = [el("h4", {}, `v${from} → v${to}`),
    rows.length ? el("table", { class: "list" }, el("tr", {}, ...["change", "where", "was", "now"].map((h) => el("th", {}, h))), ...rows)
      : el("p", { class: "hint" }, "no change in the JSON")];
  if (kind === "screen" && diff.regions?.length) {
    // The two reference crops of each changed region, side by side, from the versions.
    const [a, b] = await Promise.all([from, to].map((n) => get(`${base(kind, name)}/versions/${n}${query}`)));
    const crop = (version, ref) => {
      const data = ref && version.content.files?.[ref];
      return data ? el("img", { class: "crop", alt: ref, src: `data:image/png;base64,${data}` }) : el("span", { class: "hint" }, "none");
    };
    parts.push(el("table", { class: "list", id: "history-regions" },
      el("tr", {}, ...["region", "change", "box before", "box after", `crop v${from}`, `crop v${to}`].map((h) => el("th", {}, h))),
      ...diff.regions.map((r) => el("tr", {}, el("td", {}, r.region), el("td", {}, r.change),
        el("td", {}, r.from ? r.from.join(", ") : ""), el("td", {}, r.to ? r.to.join(", ") : ""),
        el("td", {}, crop(a, r.reference_from)), el("td", {}, crop(b, r.reference_to))))));
  }
  box.replaceChildren(...parts);
}

// The page: pick a kind and a name, or arrive with #history/<kind>/<name>.
export async function show(root, arg) {
  const [kind0, ...rest] = (arg || "").split("/");
  const kind = el("select", { name: "kind" }, ...KINDS.map((k) => el("option", { value: k, selected: k === kind0 }, k)));
  const name = el("input", { name: "name", placeholder: "name, e.g. clipshare/post_clip", value: rest.join("/") });
  const holder = el("div", {});
  const open = () => {
    if (!name.value.trim()) return;
    holder.replaceChildren(historyPanel(kind.value, name.value.trim()));
  };
  root.replaceChildren(el("h2", {}, "Definition history"),
    el("div", { class: "form-row" }, kind, name, el("button", { type: "button", onclick: () => {
      location.hash = `#history/${kind.value}/${name.value.trim()}`;
    } }, "Show")), holder);
  open();
}
