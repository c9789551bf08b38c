// The console's only way to the coordinator: the public REST API and the status stream.
// Owns the session token (sessionStorage, sent as a bearer header, never a cookie), the JSON
// and image requests that carry it, and the stream reader. A 401 asks login.js for a new
// token (once, however many requests were refused) and retries. EventSource cannot send an
// Authorization header, so the stream is read with fetch and a ReadableStream.

const TOKEN_KEY = "phonefarm.token";
let askLogin = async () => {};  // login.js: shows the login form, resolves once a token works
let loginPrompt = null;

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// The session token (null: not logged in); the live socket sends it itself.
export function accessToken() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
}
export function onUnauthorized(fn) { askLogin = fn; }

function headers(extra = {}, token = accessToken()) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

// Show the login form with ``reason`` (null: none to give); one form for every waiting caller.
export function relogin(reason) {
  if (!loginPrompt) loginPrompt = askLogin(reason).finally(() => { loginPrompt = null; });
  return loginPrompt;
}

// A 401 to a request that carried ``sent``: unless another request has got a new token
// meanwhile, that token is no good any more (expired, revoked): forget it and log in again.
async function reauthenticate(sent, resp) {
  const now = accessToken();
  if (now && now !== sent) return;
  const body = await resp.json().catch(() => ({}));
  if (now) setToken(null);
  return relogin(sent ? body.error : null);
}

// ``token`` replaces the stored one (login.js checks a pasted token before keeping it);
// ``retryAuth: false`` gives a 401 to the caller instead of asking to log in.
export async function request(method, path, body, { raw = false, retryAuth = true, token = accessToken() } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }, token), cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (resp.status === 401 && retryAuth) {
    await reauthenticate(token, resp);
    return request(method, path, body, { raw });
  }
  if (raw) {
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
    return resp;
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);

// An image as an object URL (an <img src> cannot carry the Authorization header).
export async function imageURL(path) {
  const resp = await request("GET", path, undefined, { raw: true });
  return URL.createObjectURL(await resp.blob());
}

export const enc = encodeURIComponent;

// Read /api/stream for ever: onEvent(name, hubEvent) per message, reconnecting after a
// pause when the connection ends. Returns a function that stops it.
export function openStream(onEvent, onState = () => {}) {
  let stopped = false;
  let controller = null;
  async function loop() {
    let delay = 500;
    while (!stopped) {
      controller = new AbortController();
      try {
        const token = accessToken();
        const resp = await fetch("/api/stream", { headers: headers({}, token), signal: controller.signal, cache: "no-store" });
        if (resp.status === 401) { await reauthenticate(token, resp); continue; }
        if (!resp.ok || !resp.body) throw new Error(`stream HTTP ${resp.status}`);
        onState(true);
        delay = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let name = "message"; const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (!data.length) continue; // comments, heartbeats, retry hints
            try { onEvent(name, JSON.parse(data.join("\n"))); } catch (err) { console.error("stream event", name, err); }
          }
        }
      } catch (err) {
        if (stopped) return;
        console.warn("stream interrupted", err);
      }
      onState(false);
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
  loop();
  return () => { stopped = true; if (controller) controller.abort(); };
}
