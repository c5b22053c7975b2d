// Compare: the selected runs' series overlaid, one chart per metric key, and the params that differ.

import { get } from "../api.js";
import { PALETTE } from "../chart.js";
import { badge, h, routeParams, shortId, table } from "../util.js";
import { metricChart } from "./series.js";

export async function compareView(root) {
  const ids = (routeParams().get("runs") || "").split(",").filter(Boolean);
  if (ids.length < 1) {
    root.append(h("p", {}, "Select runs in the runs table to compare them."));
    return undefined;
  }
  const details = await Promise.all(ids.map((id) => get(`/runs/${encodeURIComponent(id)}`)));
  const runs = details.map((d) => ({ run_id: d.run.run_id, label: d.run.name || shortId(d.run.run_id) }));

  const keys = [...new Set(details.flatMap((d) => Object.keys(d.params)))].sort();
  const differs = (k) => new Set(details.map((d) => d.params[k] ?? "\u0000")).size > 1;
  const diffKeys = keys.filter(differs);
  let showAll = false;
  const paramsBox = h("div");
  const renderParams = () => {
    const shown = showAll ? keys : diffKeys;
    paramsBox.replaceChildren(table(["param", ...runs.map((r, i) => h("th", {},
      h("i", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), r.label))],
    shown.map((k) => h("tr", { class: differs(k) ? "differs" : "" }, h("td", {}, k),
      details.map((d) => h("td", {}, d.params[k] ?? "—")))), { id: "param-diff", class: "grid" }),
    shown.length ? "" : h("p", { class: "muted" }, "No param differs."));
  };
  renderParams();

  let unit = "step";
  const charts = [];
  const chartGrid = h("div", { class: "charts", id: "charts" });
  root.append(
    h("h2", {}, `Compare ${runs.length} runs`),
    h("ul", { class: "compared" }, details.map((d, i) => h("li", {},
      h("i", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }),
      h("a", { href: `#/run/${d.run.run_id}` }, runs[i].label), " ", badge(d.run.status)))),
    h("section", {}, h("h3", {}, "Params that differ ",
      h("label", { class: "muted" }, h("input", { type: "checkbox", onchange: (e) => { showAll = e.target.checked; renderParams(); } }),
        " show all")), paramsBox),
    h("section", {}, h("h3", {}, "Charts ", h("select", { id: "x-unit", onchange: (e) => { unit = e.target.value; charts.forEach((c) => c.paint()); } },
      h("option", { value: "step" }, "x: step"), h("option", { value: "epoch" }, "x: epoch"))), chartGrid));

  const metricKeys = [...new Set(details.flatMap((d) => d.metrics.map((m) => m.key)))].sort();
  for (const key of metricKeys) charts.push(metricChart(chartGrid, key, runs, () => unit));
  await Promise.all(charts.map((c) => c.reload()));
  return () => charts.forEach((c) => c.destroy());
}
