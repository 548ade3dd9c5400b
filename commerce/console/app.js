// The console's shell: sign-in, hash routing (#/page/arg?query) and the error banner.

import { ApiError, clearToken, getJSON, getToken, setToken } from "./api.js";
import * as actors from "./actors.js";
import * as events from "./events.js";
import * as inventory from "./inventory.js";
import * as overview from "./overview.js";
import * as saga from "./saga.js";
import * as sagas from "./sagas.js";

const ROUTES = [
  { pattern: /^(?:overview)?$/, nav: "overview", page: overview },
  { pattern: /^sagas$/, nav: "sagas", page: sagas },
  { pattern: /^sagas\/([^/]+)$/, nav: "sagas", page: saga },
  { pattern: /^actors$/, nav: "actors", page: actors },
  { pattern: /^events$/, nav: "events", page: events },
  { pattern: /^inventory(?:\/([^/]+))?$/, nav: "inventory", page: inventory },
];

const $ = (id) => document.getElementById(id);
let stopPage = null;
let generation = 0;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

function stop() {
  generation += 1;
  if (stopPage) stopPage();
  stopPage = null;
}

function signedOut(message) {
  stop();
  clearToken();
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login-form").hidden = false;
  $("token-input").value = "";
  $("token-input").focus();
  if (message) showError(message);
}

function refused(error) {
  return `The admin token was refused: ${error.message}`;
}

// What a page calls when a request fails; a 401 signs out, anything else shows in the banner.
function failer(mine) {
  return (error) => {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) signedOut(refused(error));
    else showError(error instanceof Error ? error.message : String(error));
  };
}

function decode(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

// "#/sagas/ID?status=FAILED" -> {path: "sagas/ID", params}; path segments stay encoded until matched.
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  return cut < 0 ? { path: raw, params: new URLSearchParams() } : { path: raw.slice(0, cut), params: new URLSearchParams(raw.slice(cut + 1)) };
}

function route() {
  stop();
  clearError();
  if (!getToken()) {
    signedOut();
    return;
  }
  $("login-form").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  const { path, params } = parseHash();
  const found = ROUTES.map((r) => ({ r, match: r.pattern.exec(path) })).find((x) => x.match);
  for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("active", found && a.dataset.page === found.r.nav);
  const root = document.createElement("section");
  $("view").replaceChildren(root);
  if (!found) {
    root.dataset.testid = "not-found";
    root.textContent = `No page here: #/${path}`;
    return;
  }
  const mine = generation;
  const ctx = {
    match: found.match.map((part) => (part === undefined ? part : decode(part))),
    params,
    fail: failer(mine),
    clearError: () => mine === generation && clearError(),
    navigate: (hash) => {
      if (location.hash === hash) route();
      else location.hash = hash;
    },
    live: () => mine === generation,
  };
  stopPage = found.r.page.render(root, ctx) || null;
}

async function signIn(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  clearError();
  setToken(value);
  $("login-button").disabled = true;
  try {
    await getJSON("/api/v1/admin/sagas?limit=1"); // any admin call tells whether the token is the admin's
    route();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) signedOut(refused(error));
    else if (error instanceof ApiError && error.status === 403) signedOut(`This token is not an admin's: ${error.message}`);
    else {
      signedOut();
      showError(`Could not check the token: ${error.message}`);
    }
  } finally {
    $("login-button").disabled = false;
  }
}

$("login-form").addEventListener("submit", signIn);
$("logout-button").addEventListener("click", () => signedOut());
window.addEventListener("hashchange", route);
route();
