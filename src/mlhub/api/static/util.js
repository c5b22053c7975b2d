// Small DOM and formatting helpers shared by the views.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

export function duration(run) {
  if (!run.started_at) return "";
  const end = run.ended_at ? new Date(run.ended_at) : new Date();
  let s = Math.max(0, Math.round((end - new Date(run.started_at)) / 1000));
  const hours = Math.floor(s / 3600); s -= hours * 3600;
  const minutes = Math.floor(s / 60); s -= minutes * 60;
  return hours ? `${hours}h ${minutes}m` : minutes ? `${minutes}m ${s}s` : `${s}s`;
}

// What the run statuses that are not self-explanatory mean (a job's "cancelled" is its run's "killed").
const STATUS_TITLES = {
  killed: "stopped before it ended (cancelled, SIGTERM or Ctrl-C)",
  crashed: "its producer went silent (no heartbeat); it can be resumed",
};

export function badge(status) {
  return h("span", { class: `badge status-${status}`, title: STATUS_TITLES[status] }, status);
}

export function errorBox(error) {
  const code = error && error.code ? `[${error.code}] ` : "";
  return h("div", { class: "error", role: "alert" }, `${code}${error && error.message ? error.message : error}`);
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => (x instanceof Node ? x : h("th", {}, x))))),
    h("tbody", {}, rows));
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

// The query part of the current hash route ("#/runs?filter=..." -> URLSearchParams).
export function routeParams() {
  const hash = window.location.hash || "#/";
  const q = hash.indexOf("?");
  return new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
}

export function go(path, params) {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""))
    .toString() : "";
  window.location.hash = `#${path}${q ? `?${q}` : ""}`;
}
