// The phone wall (spec 4.1-4.3, 5.1): one tile per phone with its live screen, number overlay,
// badges and tags; selection by click, drag and Ctrl+click; action mode's gestures sent to
// every selected phone, scaled to each phone's screen size; the single large phone view.
//
// Frames: a tile refreshes its thumbnail when the stream says the phone has a new one, at
// most MAX_FPS times a second, only while the tile is on screen and the tab is visible, with
// a few requests in flight at most (the stream holds one of the browser's connections).
// Live: the tiles on screen (and the single view, at full rate) are watched over the live
// socket (live.js) at the width they are shown; their frames come as the phone's screen
// changes. A tile fed that way skips the thumbnail requests; a phone whose node sends no
// live frames (an older node) keeps them.

import { enc, imageURL, post } from "./api.js";
import { bySize, classify, sample, scaled } from "./gestures.js";
import { changed, el, numberOf, phoneOf, scopeOf, state, stats, toast } from "./state.js";
import { openTextDialog } from "./textdialog.js";
import { liveOpen, onLiveFrame, setWatch } from "./live.js";

const MAX_FPS = 4;
const MAX_IN_FLIGHT = 5;   // HTTP/1.1 gives 6 connections per host; the stream holds one
const IDLE_REFRESH_MS = 15000;   // in case a thumbnail event was lost (stream overflow)
const THUMB_W = 270;
const SINGLE_W = 540;
const DEFAULT_SIZE = [1080, 2400];
const LIVE_WALL_FPS = 10;
const LIVE_SINGLE_FPS = 60;      // the stream's full rate
const LIVE_WIDTH_STEP = 20;      // widths rounded up to this: a resize does not re-watch every pixel

stats.thumbLoads = {};            // serial -> frames fetched as thumbnails (not over the live socket)
const tiles = new Map();          // serial -> {root, img, screen, badges, label, tags, visible, dirty, busy, last, url}
let inFlight = 0;
let single = null;                // the single view's tile
const wall = () => document.getElementById("wall");

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const tile = [...tiles.values(), single].find((t) => t && t.root === entry.target);
    if (tile) tile.visible = entry.isIntersecting;
  }
}, { threshold: 0.01 });

function sizeOf(phone, tile) {
  if (phone && phone.screen_size) return phone.screen_size;
  if (tile && tile.img.naturalWidth) return [DEFAULT_SIZE[0], Math.round(DEFAULT_SIZE[0] * tile.img.naturalHeight / tile.img.naturalWidth)];
  return DEFAULT_SIZE;
}

function makeTile(serial, large = false) {
  const img = el("img", { alt: serial, draggable: "false" });
  const trail = el("canvas", { class: "trail" });
  const screen = el("div", { class: "screen" }, img, el("div", { class: "number" }), trail);
  const badges = el("div", { class: "badges" });
  screen.append(badges);
  const label = el("div", { class: "label" });
  const root = el("div", { class: "phone", dataset: { serial } }, screen, label);
  const tile = { serial, root, img, screen, badges, label, trail, visible: false, dirty: true, busy: false, last: 0, url: null, large };
  img.addEventListener("load", () => {
    if (img.naturalWidth) root.style.setProperty("--aspect", `${img.naturalWidth} / ${img.naturalHeight}`);
  });
  bindPointer(tile);
  observer.observe(root);
  return tile;
}

function renderTile(tile, phone) {
  const number = numberOf(phone.serial);
  tile.root.querySelector(".number").textContent = number;
  tile.root.classList.toggle("selected", state.selected.has(phone.serial));
  tile.root.classList.toggle("offline", phone.state === "offline");
  tile.root.classList.toggle("failed", phone.state === "failed");
  const reg = state.registry.get(phone.serial) || {};
  tile.label.textContent = `${number} · ${reg.phone_number || phone.serial} · ${phone.node}`;
  tile.label.title = `${phone.serial} on ${phone.node}`;
  const badges = [];
  // A coordinator pause says why (e.g. "paused: recovery_failures"): the operator resumes it.
  const stateText = phone.paused && phone.state === "paused" ? `paused: ${phone.paused.reason}` : phone.state;
  if (phone.state !== "online") badges.push(el("span", { class: `badge ${phone.state}`, title: stateText }, stateText));
  if (phone.lock_holder) badges.push(el("span", { class: "badge lock", title: `locked by ${phone.lock_holder}` }, `🔒 ${phone.lock_holder.slice(0, 10)}`));
  if (phone.last_screen) badges.push(el("span", { class: "badge scr", title: phone.last_screen }, phone.last_screen));
  for (const tag of phone.tags || []) badges.push(el("span", { class: "badge tag-badge" }, `#${tag}`));
  tile.badges.replaceChildren(...badges);
}

export function renderWall() {
  const container = wall();
  const phones = state.phones;
  const seen = new Set();
  for (const phone of phones) {
    let tile = tiles.get(phone.serial);
    if (!tile) { tile = makeTile(phone.serial); tiles.set(phone.serial, tile); }
    seen.add(phone.serial);
    renderTile(tile, phone);
  }
  for (const [serial, tile] of tiles) {
    if (!seen.has(serial)) { observer.unobserve(tile.root); tile.root.remove(); if (tile.url) URL.revokeObjectURL(tile.url); tiles.delete(serial); }
  }
  const order = phones.map((p) => tiles.get(p.serial).root);
  if (order.some((node, i) => container.children[i] !== node) || container.children.length !== order.length) container.replaceChildren(...order);
  layout();
  renderSingle();
}

// Rows of at most 5, scaled so the whole wall fits the window, or (fit width) so a row fills
// the width and the wall scrolls; a phone is never wider than 320 px.
export function layout() {
  const container = wall();
  const n = Math.max(state.phones.length, 1);
  const cols = Math.min(5, n);
  const rows = Math.ceil(n / cols);
  const gap = n > 20 ? 4 : 10;
  const aspect = 20 / 9 + 0.1;   // height / width of a tile, label included
  const byWidth = (container.clientWidth - gap * (cols - 1) - 12) / cols;
  const byHeight = ((container.clientHeight - gap * (rows - 1) - 8) / rows) / aspect;
  const fitWindow = document.getElementById("wall-fit").value === "window";
  const w = Math.max(24, Math.floor(Math.min(byWidth, fitWindow ? byHeight : Infinity, 320)));
  container.style.setProperty("--gap", `${gap}px`);
  container.style.setProperty("--tile-w", `${w}px`);
  container.style.gridTemplateColumns = `repeat(${cols}, ${w}px)`;
}

function renderSingle() {
  const box = document.getElementById("single");
  const wallEl = wall();
  const isSingle = state.view === "single";
  box.hidden = !isSingle;
  wallEl.hidden = isSingle;
  document.getElementById("view-toggle").textContent = isSingle ? "Wall" : "Single phone";
  if (!isSingle) { if (single) { observer.unobserve(single.root); single.root.remove(); single = null; } return; }
  const serial = [...state.selected][0] || (state.phones[0] && state.phones[0].serial);
  if (!serial) return;
  if (!single || single.serial !== serial) {
    if (single) { observer.unobserve(single.root); single.root.remove(); }
    single = makeTile(serial, true);
    box.replaceChildren(single.root);
  }
  const phone = phoneOf(serial);
  if (phone) renderTile(single, phone);
}

// --- frames ------------------------------------------------------------------------------

// Every phone's frame may be stale (the stream was down or dropped events): fetch again.
export function allScreensChanged() {
  for (const tile of tiles.values()) tile.dirty = true;
  if (single) single.dirty = true;
}

export function screenChanged(serial) {
  const tile = tiles.get(serial);
  if (tile) tile.dirty = true;
  if (single && single.serial === serial) single.dirty = true;
}

async function load(tile) {
  tile.busy = true; inFlight += 1; tile.last = performance.now(); tile.dirty = false;
  try {
    const path = `/api/phones/${enc(tile.serial)}/screen?w=`;
    // The large view asks the phone for a sharper frame; a phone busy with a run (locked)
    // cannot take one, so its latest thumbnail does.
    const url = tile.large ? await imageURL(path + SINGLE_W).catch(() => imageURL(path + THUMB_W))
      : await imageURL(path + THUMB_W);
    // A live frame came while this was on its way: it is newer, keep it.
    if (tile.live && liveOpen()) { URL.revokeObjectURL(url); return; }
    await new Promise((resolve) => {
      tile.img.onload = tile.img.onerror = resolve;
      tile.img.src = url;
    });
    if (tile.url) URL.revokeObjectURL(tile.url);
    tile.url = url;
    stats.framesLoaded += 1;
    stats.loads[tile.serial] = (stats.loads[tile.serial] || 0) + 1;
    stats.thumbLoads[tile.serial] = (stats.thumbLoads[tile.serial] || 0) + 1;
  } catch (err) {
    stats.frameErrors += 1;
  } finally {
    tile.busy = false; inFlight -= 1;
    pump();  // the freed slot goes to the next waiting frame at once, not at the next tick
  }
}

// A live frame: shown in every tile of its phone (wall and single view).
onLiveFrame((serial, blob) => {
  for (const tile of [tiles.get(serial), single && single.serial === serial ? single : null]) {
    if (!tile) continue;
    const url = URL.createObjectURL(blob);
    tile.img.src = url;
    if (tile.url) URL.revokeObjectURL(tile.url);
    tile.url = url;
    tile.live = true; tile.dirty = false; tile.last = performance.now();
  }
  stats.framesLoaded += 1;   // a frame shown is a frame loaded, however it came
  stats.loads[serial] = (stats.loads[serial] || 0) + 1;
});

function liveWidth(tile) {
  const px = tile.img.clientWidth || tile.root.clientWidth || THUMB_W;
  const w = Math.ceil(px * (window.devicePixelRatio || 1) / LIVE_WIDTH_STEP) * LIVE_WIDTH_STEP;
  return Math.min(2000, Math.max(20, w));
}

// What the page shows now: the single view's phone at full rate, else the tiles on screen;
// nothing while the tab is hidden.
function watchSet() {
  const watch = {};
  if (document.hidden) return watch;
  if (state.view === "single") {
    if (single) watch[single.serial] = { width: liveWidth(single), fps: LIVE_SINGLE_FPS };
    return watch;
  }
  for (const tile of tiles.values()) {
    if (tile.visible) watch[tile.serial] = { width: liveWidth(tile), fps: LIVE_WALL_FPS };
  }
  return watch;
}

function pump() {
  setWatch(watchSet());
  if (document.hidden) return;
  const now = performance.now();
  const all = single ? [single, ...tiles.values()] : tiles.values();
  for (const tile of all) {
    if (inFlight >= MAX_IN_FLIGHT) return;
    if (!tile.visible || tile.busy || (state.view === "single" && !tile.large)) continue;
    if (tile.live && liveOpen()) continue;  // its frames come over the live socket
    if (!tile.dirty && now - tile.last < IDLE_REFRESH_MS) continue;
    if (now - tile.last < 1000 / MAX_FPS) continue;
    load(tile);
  }
}
setInterval(pump, 50);
document.addEventListener("visibilitychange", pump);

// --- selection and actions --------------------------------------------------------------

let drag = null;      // select mode: {anchor, base, moved}
let gesture = null;   // action mode: {tile, path, rect}

function tileAt(x, y) {
  const node = document.elementFromPoint(x, y);
  const root = node && node.closest(".phone");
  return root ? root.dataset.serial : null;
}

function selectRange(anchor, current, base) {
  const order = state.phones.map((p) => p.serial);
  const [a, b] = [order.indexOf(anchor), order.indexOf(current)].sort((x, y) => x - y);
  state.selected = new Set([...base, ...order.slice(a, b + 1)]);
  changed("selection");
}

function bindPointer(tile) {
  tile.root.addEventListener("contextmenu", (e) => {
    e.preventDefault();
    const targets = targetsFor(tile.serial);
    openTextDialog(targets);
  });
  tile.root.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    if (e.ctrlKey || e.metaKey) {
      state.selected.has(tile.serial) ? state.selected.delete(tile.serial) : state.selected.add(tile.serial);
      changed("selection");
      return;
    }
    if (state.mode === "action" && e.target.closest(".screen")) {
      const rect = tile.screen.getBoundingClientRect();
      gesture = { tile, rect, path: [point(e, rect)] };
      tile.screen.setPointerCapture(e.pointerId);
      return;
    }
    drag = { anchor: tile.serial, base: new Set(), moved: false };
    state.selected = new Set([tile.serial]);
    changed("selection");
  });
}

// t: when the input happened (the event's timeStamp, on performance.now()'s clock), not
// when this busy page got to it: a tap must not turn into a long tap because sixty live
// screens kept the main thread from handling its release for half a second.
function point(e, rect) {
  return { fx: Math.min(Math.max((e.clientX - rect.left) / rect.width, 0), 1),
           fy: Math.min(Math.max((e.clientY - rect.top) / rect.height, 0), 1), t: e.timeStamp };
}

document.addEventListener("pointermove", (e) => {
  if (gesture) {
    sample(gesture.path, point(e, gesture.rect));
    drawTrail(gesture);
    return;
  }
  if (!drag || !(e.buttons & 1)) return;
  const serial = tileAt(e.clientX, e.clientY);
  if (serial && (serial !== drag.anchor || drag.moved)) {
    drag.moved = true;
    selectRange(drag.anchor, serial, drag.base);
  }
});

document.addEventListener("pointerup", (e) => {
  stats.lastPointerUp = performance.timeOrigin + e.timeStamp;  // epoch ms, for bench/console.py
  if (gesture) {
    const g = gesture; gesture = null;
    sample(g.path, point(e, g.rect), true);
    clearTrail(g.tile);
    act(g.tile.serial, classify(g.path, sizeOf(phoneOf(g.tile.serial), g.tile)));
  }
  drag = null;
});

function drawTrail(g) {
  const c = g.tile.trail;
  c.width = g.rect.width; c.height = g.rect.height;
  const ctx = c.getContext("2d");
  ctx.strokeStyle = "rgba(47,140,255,.9)"; ctx.lineWidth = 3; ctx.beginPath();
  g.path.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, p.fx * c.width, p.fy * c.height));
  ctx.stroke();
}
function clearTrail(tile) { tile.trail.getContext("2d").clearRect(0, 0, tile.trail.width, tile.trail.height); }

// The phones an action on ``serial`` goes to: the selection when the phone is in it, else
// that phone alone (acting on an unselected phone never touches the others).
export function targetsFor(serial) {
  if (state.selected.has(serial)) return state.phones.filter((p) => state.selected.has(p.serial));
  const phone = phoneOf(serial);
  return phone ? [phone] : [];
}

// Send ``action`` (or a gesture in screen fractions) to ``phones``; one request per screen size.
export async function sendToPhones(phones, makeAction, label) {
  const t0 = performance.now();
  const fallback = sizeOf(phones[0], tiles.get(phones[0] && phones[0].serial));
  const results = {};
  let refused = null;  // a 403 (a viewer): the server's reason, as is
  await Promise.all(bySize(phones, fallback).map(async ({ size, serials }) => {
    try {
      const out = await post("/api/actions", { scope: scopeOf(serials), action: makeAction(size) });
      Object.assign(results, out.results);
    } catch (err) {
      if (err.status === 403) refused = err.message;
      for (const s of serials) results[s] = { status: "error", error: err.message };
    }
  }));
  const failed = Object.entries(results).filter(([, r]) => r.status !== "ok");
  stats.actions.push({ label, ms: performance.now() - t0, phones: phones.length, failed: failed.length });
  if (refused) toast(`${label}: ${refused}`, true);
  else if (failed.length) toast(`${label}: ${failed.length} of ${phones.length} failed (${failed[0][0]}: ${failed[0][1].status} ${failed[0][1].error || ""})`, true);
  else toast(`${label} on ${phones.length} phone(s)`);
  for (const p of phones) screenChanged(p.serial);
  return results;
}

function act(serial, g) {
  const phones = targetsFor(serial);
  if (!phones.length) return;
  return sendToPhones(phones, (size) => scaled(g, size), g.type.replace("_", " "));
}

export function keyPress(key) {
  const phones = state.phones.filter((p) => state.selected.has(p.serial));
  if (!phones.length) { toast("select phones first", true); return; }
  sendToPhones(phones, () => ({ type: "key", key }), `key ${key}`);
}

export function initWall() {
  new ResizeObserver(() => layout()).observe(wall());
  document.getElementById("wall-fit").addEventListener("change", layout);
  document.getElementById("view-toggle").addEventListener("click", () => {
    state.view = state.view === "wall" ? "single" : "wall";
    renderSingle();
  });
}
