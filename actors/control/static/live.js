// The live wall's socket (GET /api/live, a WebSocket): the console says which phones it shows
// and how wide, and gets each new frame of those phones as it comes (a static screen sends
// nothing). One socket for the whole page; its watch set is sent whenever it changes, again
// after every reconnect. A browser cannot set an Authorization header on a WebSocket, so the
// access token (if any) goes in the first message.

import { accessToken } from "./api.js";
import { stats } from "./state.js";

const RETRY_MAX_MS = 10000;

let socket = null;
let open = false;
let wanted = {};         // serial -> {width, fps}
let sentKey = null;      // the watch set the coordinator has, as JSON
let retries = 0;
let onFrame = () => {};

stats.liveFrames = 0;
stats.liveBytes = 0;
stats.liveErrors = [];
stats.liveState = "idle";   // connecting | open | closed: what the socket is doing

// ``handler(serial, blob, header)`` gets every frame ({serial, ts, width, height}: the full frame's size).
export function onLiveFrame(handler) { onFrame = handler; }

export function liveOpen() { return open; }

// The phones to watch now: {serial: {width, fps}}; sent only when it differs from the last.
export function setWatch(watch) {
  wanted = watch;
  if (!socket) connect();
  flush();
}

function flush() {
  const key = JSON.stringify(wanted);
  if (!open || key === sentKey) return;
  socket.send(JSON.stringify({ watch: wanted }));
  sentKey = key;
}

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`;
  const ws = new WebSocket(url);
  socket = ws;
  stats.liveState = "connecting";
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    open = true; sentKey = null; retries = 0; stats.liveState = "open";
    const token = accessToken();
    if (token) ws.send(JSON.stringify({ token }));
    flush();
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const msg = JSON.parse(e.data);
      if (msg.error) { stats.liveErrors.push(msg); sentKey = null; }
      return;
    }
    const view = new DataView(e.data);
    const size = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(e.data, 4, size)));
    const blob = new Blob([new Uint8Array(e.data, 4 + size)], { type: "image/jpeg" });
    stats.liveFrames += 1;
    stats.liveBytes += e.data.byteLength;
    onFrame(header.serial, blob, header);
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    open = false; socket = null; stats.liveState = "closed";
    // The coordinator restarted, or the token was wrong (4401): try again, slower each time.
    setTimeout(() => { if (!socket) connect(); }, Math.min(RETRY_MAX_MS, 500 * 2 ** retries++));
  };
}
