// Runs: the experiments, and a runs table (status, start, duration, chosen params, best metrics) filtered with the
// API's filter language, sorted and paged on the server (keyset page tokens), with runs selected for compare.

import { get } from "../api.js";
import { formatNumber } from "../chart.js";
import { badge, duration, errorBox, fmtTime, go, h, routeParams, shortId, table } from "../util.js";

const PAGE_SIZE = 50; // ?size= overrides it (1..1000)
const SERVER_SORT = { name: "name", status: "status", started: "started_at", created: "created_at" };
const COLUMNS_KEY = "mlhub.columns";

function chosenColumns(runs) {
  const saved = JSON.parse(localStorage.getItem(COLUMNS_KEY) || "null");
  const params = new Set(), metrics = new Set();
  for (const r of runs) {
    Object.keys(r.params).forEach((k) => params.add(k));
    Object.keys(r.best_metrics && Object.keys(r.best_metrics).length ? r.best_metrics : r.metrics)
      .forEach((k) => metrics.add(k));
  }
  const all = { params: [...params].sort(), metrics: [...metrics].sort() };
  const pick = saved || { params: all.params.slice(0, 6), metrics: all.metrics.slice(0, 6) };
  return { all, pick };
}

function metricCell(run, key) {
  const best = run.best_metrics && key in run.best_metrics;
  const value = best ? run.best_metrics[key] : run.metrics[key];
  return h("td", { class: "num", title: best ? "best (by the declared direction)" : "last value" }, formatNumber(value));
}

export async function runsView(root) {
  const q = routeParams();
  const experiment = q.get("experiment") || "";
  const filter = q.get("filter") || "";
  const order = q.get("order") || "created_at DESC";
  const tokens = (q.get("pages") || "").split(",").filter(Boolean); // page tokens of the pages before this one
  const size = Math.min(1000, Math.max(1, Number(q.get("size")) || PAGE_SIZE));
  const keep = { experiment, filter, order, size: q.get("size") || undefined }; // what every link of this view keeps

  const experiments = await get("/experiments", { max_results: 1000 });
  const nav = h("aside", { class: "experiments" }, h("h3", {}, "Experiments"),
    h("ul", {},
      h("li", { class: experiment ? "" : "active" }, h("a", { href: "#/runs" }, "All runs")),
      experiments.data.map((e) => h("li", { class: e.experiment_id === experiment ? "active" : "" },
        h("a", { href: `#/runs?experiment=${encodeURIComponent(e.experiment_id)}`, "data-experiment": e.experiment_id },
          e.name)))));

  const filterInput = h("input", { id: "filter", type: "search", value: filter, size: 70,
    placeholder: "metrics.val_acc > 0.9 and params.lr = '0.01' and status = 'finished'" });
  const form = h("form", { class: "filter", onsubmit: (e) => {
    e.preventDefault();
    go("/runs", { ...keep, filter: filterInput.value.trim() });
  } }, filterInput, h("button", { type: "submit" }, "Filter"));

  const body = h("section", { class: "runs" }, form);
  root.append(h("div", { class: "split" }, nav, body));

  let page;
  try {
    page = await get("/runs", { experiment_id: experiment || undefined, filter: filter || undefined,
      order_by: order, max_results: size, page_token: tokens[tokens.length - 1] });
  } catch (error) {
    body.append(errorBox(error));
    return;
  }
  const runs = page.data.slice();
  const { all, pick } = chosenColumns(runs);
  const selected = new Set();
  const compare = h("button", { id: "compare", disabled: true, onclick: () => go("/compare", { runs: [...selected].join(",") }) },
    "Compare selected");
  const update = () => {
    compare.disabled = selected.size < 2;
    compare.textContent = `Compare selected (${selected.size})`;
  };

  // Every column but duration sorts on the server (the API's order_by), so a sort spans all pages.
  const [orderColumn, orderDir = "ASC"] = order.split(" ");
  const declared = new Set(runs.flatMap((r) => Object.keys(r.best_metrics || {})));
  const sortHeader = (label, column, title) => {
    const active = orderColumn === column;
    const next = active && orderDir === "DESC" ? "ASC" : "DESC";
    return h("th", { class: `sortable${active ? ` sorted-${orderDir.toLowerCase()}` : ""}`, "data-sort": column, title,
      onclick: () => go("/runs", { ...keep, order: `${column} ${next}` }) }, label);
  };
  const headers = [h("th", {}, ""), sortHeader("name", SERVER_SORT.name), sortHeader("status", SERVER_SORT.status),
    sortHeader("start", SERVER_SORT.started), h("th", {}, "duration"),
    ...pick.params.map((k) => sortHeader(k, `params.${k}`, `param ${k}`)),
    ...pick.metrics.map((k) => (declared.has(k)
      ? sortHeader(k, `best_metrics.${k}`, `${k}: best value (by its declared direction)`)
      : sortHeader(k, `metrics.${k}`, `${k}: last value`)))];
  const rows = runs.map((r) => h("tr", { "data-run": r.run_id },
    h("td", {}, h("input", { type: "checkbox", "aria-label": `select ${r.name}`, onchange: (e) => {
      if (e.target.checked) selected.add(r.run_id); else selected.delete(r.run_id);
      update();
    } })),
    h("td", {}, h("a", { href: `#/run/${r.run_id}` }, r.name || shortId(r.run_id))),
    h("td", {}, badge(r.status)),
    h("td", {}, fmtTime(r.started_at)),
    h("td", {}, duration(r)),
    pick.params.map((k) => h("td", {}, r.params[k] ?? "")),
    pick.metrics.map((k) => metricCell(r, k))));

  const columns = h("details", { class: "columns" }, h("summary", {}, "Columns"),
    ["params", "metrics"].map((kind) => h("fieldset", {}, h("legend", {}, kind), all[kind].map((k) => h("label", {},
      h("input", { type: "checkbox", checked: pick[kind].includes(k), onchange: (e) => {
        const next = { params: pick.params.slice(), metrics: pick.metrics.slice() };
        next[kind] = e.target.checked ? [...next[kind], k] : next[kind].filter((x) => x !== k);
        localStorage.setItem(COLUMNS_KEY, JSON.stringify(next));
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } }), k)))));

  const pager = h("div", { class: "pager" },
    h("button", { id: "prev", disabled: tokens.length === 0,
      onclick: () => go("/runs", { ...keep, pages: tokens.slice(0, -1).join(",") }) }, "‹ Previous"),
    h("span", { id: "page-info" }, `page ${tokens.length + 1} · ${page.count} runs`),
    h("button", { id: "next", disabled: !page.next_page_token,
      onclick: () => go("/runs", { ...keep, pages: [...tokens, page.next_page_token].join(",") }) },
    "Next ›"));

  body.append(h("div", { class: "toolbar" }, compare, columns, pager),
    table(headers, rows, { id: "runs-table", class: "grid" }));
  if (!runs.length) body.append(h("p", { class: "muted" }, "No run matches."));
}
