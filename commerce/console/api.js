// Calls to the service: the admin token from sessionStorage as a bearer header, and RFC 9457
// problems turned into ApiError (status, title, detail) for the pages to show as text.

const TOKEN_KEY = "commerce.console.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || (status ? `HTTP ${status}` : "Network error");
    super(problem.detail ? `${title} (${status || "no answer"}): ${problem.detail}` : `${title} (${status})`);
    this.status = status;
    this.problem = problem;
  }
}

// A path with its query; empty values are left out.
export function query(path, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && String(value) !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

// A fresh Idempotency-Key. crypto.randomUUID only exists in secure contexts (https, localhost).
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function problemOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: described below
  }
  return { title: response.statusText || `HTTP ${response.status}`, status: response.status, detail: text.slice(0, 300) };
}

async function send(path, { method = "GET", body, headers = {}, accept = [], signal } = {}) {
  const init = { method, cache: "no-store", signal, headers: { Accept: "application/json, application/problem+json", ...headers } };
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { title: "Network error", detail: `${path} did not answer (${e.message})` });
  }
  if (response.ok || accept.includes(response.status)) return response;
  throw new ApiError(response.status, await problemOf(response));
}

// A read (never a command: its outcome would be unknown) is given up after this long, its body included, so
// that a request that hangs does not hold a page's refresh loop for good; longer than any answer the API
// gives (its requests time out at 30 s, its database statements at 60 s).
const READ_WITHIN_MS = 75000;

async function read(path, options, take) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), READ_WITHIN_MS);
  try {
    return await take(await send(path, { ...options, signal: abort.signal }));
  } catch (e) {
    if (!abort.signal.aborted) throw e;
    throw new ApiError(0, { title: "Network error", detail: `${path} did not answer within ${READ_WITHIN_MS / 1000} s` });
  } finally {
    clearTimeout(timer);
  }
}

export async function getJSON(path) {
  return read(path, {}, (response) => response.json());
}

export async function getText(path) {
  return read(path, { headers: { Accept: "text/plain" } }, (response) => response.text());
}

// /health answers 503 with the same shape when a check fails; a 503 problem means no report at all.
export async function getHealth() {
  const { status, body } = await read("/health", { accept: [503] },
    async (response) => ({ status: response.status, body: await response.json() }));
  if (!body || typeof body.checks !== "object") throw new ApiError(status, body || {});
  return body;
}

// A POST with a fresh Idempotency-Key; resolves to {status, body}.
export async function post(path, body) {
  const response = await send(path, { method: "POST", body, headers: { "Idempotency-Key": newKey() } });
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  return { status: response.status, body: answer };
}
