// The console's shared state: the phones as GET /api/phones last said (merged with stream
// events), the selection, and a tiny change bus so the panel and the wall redraw together.

export const state = {
  phones: [],            // rows of GET /api/phones, in wall order (sorted by serial)
  selected: new Set(),   // serials
  mode: "select",        // select | action
  view: "wall",          // wall | single
  registry: new Map(),   // serial -> farm registry row (phone_number, client, model)
};

const listeners = new Set();
export function onChange(fn) { listeners.add(fn); }
export function changed(what) { for (const fn of listeners) fn(what); }

export const phoneOf = (serial) => state.phones.find((p) => p.serial === serial);
export const numberOf = (serial) => state.phones.findIndex((p) => p.serial === serial) + 1;
export const scopeOf = (serials) => "phone:" + serials.join(",");
export const selectedPhones = () => state.phones.filter((p) => state.selected.has(p.serial));

let toastTimer = null;
export function toast(message, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.style.color = isError ? "#ff9d9d" : "#ffd479";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ""; }, 6000);
  if (isError) console.warn(message);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Metrics the browser tests and bench/console.py read (window.__console).
export const stats = { framesLoaded: 0, frameErrors: 0, thumbnailEvents: 0, loads: {}, actions: [], started: performance.now() };
window.__console = stats;
