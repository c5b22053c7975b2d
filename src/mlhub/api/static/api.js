// The public REST API (/api/v1) with the user's token; errors carry the API's code and message.

const TOKEN_KEY = "mlhub.token";

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

function headers(json) {
  const h = {};
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

export function apiUrl(path, params) {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else url.searchParams.set(k, v);
  }
  return url;
}

async function fail(response) {
  let error = { code: `HTTP_${response.status}`, message: response.statusText };
  try {
    error = (await response.json()).error || error;
  } catch (_) { /* not JSON */ }
  throw new ApiError(response.status, error.code, error.message, error.details);
}

export async function get(path, params) {
  const response = await fetch(apiUrl(path, params), { headers: headers(false) });
  if (!response.ok) await fail(response);
  return response.json();
}

export async function post(path, body, params) {
  const response = await fetch(apiUrl(path, params), {
    method: "POST", headers: headers(true), body: JSON.stringify(body ?? {}),
  });
  if (!response.ok) await fail(response);
  return response.json();
}

// An artifact download: fetched with the token (a plain link could not send it), saved through a blob URL.
export async function download(path, filename) {
  const response = await fetch(apiUrl(path), { headers: headers(false) });
  if (!response.ok) await fail(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// The caller as the API sees the current token ({role, can_write, can_admin, ...}), asked once per token;
// {role: null, invalid: true} when the token is refused, so pages can hide what the token may not do.
let caller = null;
let callerToken = null;
export async function whoami() {
  const token = getToken();
  if (caller && callerToken === token) return caller;
  try {
    caller = await get("/whoami");
  } catch (error) {
    caller = { role: null, can_write: false, can_admin: false, protected_aliases: [], invalid: error.status === 401,
      error };
  }
  callerToken = token;
  return caller;
}
