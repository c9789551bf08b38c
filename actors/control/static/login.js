// Who is logged in. Owns the login page (user name and password, or an access token pasted
// for a script), the one-time login link in the URL (#login=<token>: redeemed, then taken out
// of the address bar and history), the header's name, role and clients, and logging out.
// The token itself lives in api.js.

import { onUnauthorized, request, setToken } from "./api.js";
import { toast } from "./state.js";

const PASTED_KEY = "phonefarm.pasted";  // the token was pasted: logging out must not revoke it
const NOTICE_KEY = "phonefarm.notice";  // what the login page says after a reload (logged out)
let user = null;                        // the caller as /api/me or /api/login named it
let notice = null;                      // the next login page's message (a used login link)
let leaving = false;                    // logging out: the page is about to reload

const page = () => document.getElementById("login");

function showUser(me) {
  user = me;
  const reach = me.clients && me.clients.length ? `: ${me.clients.join(", ")}` : "";
  document.getElementById("whoami").textContent = `${me.name} (${me.role}${reach})`;
  document.getElementById("logout").hidden = false;
}

// Everything but the login page is inert while it shows.
function blockPage(blocked) {
  page().hidden = !blocked;
  for (const part of document.querySelectorAll("body > header, body > main")) part.inert = blocked;
}

// Show the login page with ``reason``; resolves once a working token is stored.
function askLogin(reason) {
  // A poll refused between the revoke and the reload must not take the "Logged out." notice
  // that the reloaded page is to show; it waits for the reload instead.
  if (leaving) return new Promise(() => {});
  const form = page().querySelector("form");
  const error = form.querySelector(".error");
  const submit = form.querySelector("button.primary");
  const byToken = () => !form.querySelector(".by-token").hidden;
  error.textContent = reason || notice || sessionStorage.getItem(NOTICE_KEY) || "";
  notice = null;
  sessionStorage.removeItem(NOTICE_KEY);
  blockPage(true);
  form.querySelector(byToken() ? "[name=token]" : "[name=user]").focus();
  return new Promise((resolve) => {
    form.onsubmit = async (e) => {
      e.preventDefault();
      submit.disabled = true;
      try {
        let me;
        if (byToken()) {
          const token = form.token.value.trim();
          me = await request("GET", "/api/me", undefined, { retryAuth: false, token });
          setToken(token);
          sessionStorage.setItem(PASTED_KEY, "1");
        } else {
          const out = await request("POST", "/api/login", { user: form.user.value.trim(), password: form.password.value }, { retryAuth: false });
          setToken(out.token);
          sessionStorage.removeItem(PASTED_KEY);
          me = out.user;
        }
        // Another person: what the page holds (phones, selection) was the previous one's.
        if (user && user.name !== me.name) { location.reload(); return; }
        form.reset();
        blockPage(false);
        showUser(me);
        resolve();
      } catch (err) {
        error.textContent = err.message;
        // Too many wrong passwords: the button waits as long as the server says.
        const wait = err.status === 429 ? (err.body.retry_after_s || 1) * 1000 : 0;
        setTimeout(() => { submit.disabled = false; }, wait);
        return;
      }
      submit.disabled = false;
    };
  });
}

async function logOut() {
  // A pasted token belongs to a script: forget it here, but do not revoke it.
  leaving = true;
  if (!sessionStorage.getItem(PASTED_KEY)) {
    try {
      await request("POST", "/api/logout", undefined, { retryAuth: false });
    } catch (err) {
      if (err.status !== 401) { leaving = false; toast(`log out: ${err.message}`, true); return; }
    }
  }
  setToken(null);
  sessionStorage.removeItem(PASTED_KEY);
  sessionStorage.setItem(NOTICE_KEY, "Logged out.");
  location.reload();  // the next person starts from a page with nothing of this one's
}

// Before the page loads its data: redeem a login link, then learn (or ask) who is here.
export async function initLogin() {
  onUnauthorized(askLogin);
  document.getElementById("logout").onclick = logOut;
  const form = page().querySelector("form");
  form.querySelector(".switch").onclick = () => {
    const token = form.querySelector(".by-token");
    token.hidden = !token.hidden;
    form.querySelector(".by-password").hidden = !token.hidden;
    for (const input of form.querySelectorAll("input")) input.disabled = input.closest("[hidden]") !== null;
    form.querySelector(".switch").textContent = token.hidden ? "Use an access token instead" : "Log in with a password";
  };
  // A link pasted into this open tab: start over, so the load below redeems it.
  window.addEventListener("hashchange", () => { if (location.hash.startsWith("#login=")) location.reload(); });
  const link = /^#login=(.+)$/.exec(location.hash);
  if (link) {
    // Out of the address bar and the history first: the link works once, whatever happens.
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const out = await request("POST", "/api/login", { link: decodeURIComponent(link[1]) }, { retryAuth: false });
      setToken(out.token);
      sessionStorage.removeItem(PASTED_KEY);
      showUser(out.user);
    } catch (err) {
      notice = `login link: ${err.message}`;
    }
  }
  try {  // no token (or a dead one): the 401 shows the login page, then this carries on
    if (!user) showUser(await request("GET", "/api/me"));
  } catch (err) { toast(`who am I: ${err.message}`, true); }
  if (notice) { toast(notice, true); notice = null; }
}
