// Metric charts backed by the series endpoints: one run's keys (run page) or several runs' key (compare page).
// Points come downsampled by the API (min/max preserving); a zoom refetches the chosen step range.

import { get } from "../api.js";
import { LineChart, PALETTE } from "../chart.js";

export const MAX_POINTS = 1000;

// x values of a series in the chosen unit ("step" or "epoch")
function xs(series, unit) {
  return unit === "epoch" ? series.epochs : series.steps;
}

// The step range [lo, hi] covered by an x range of the loaded series (x in epochs maps through the points).
function stepRange(loaded, unit, lo, hi) {
  if (unit === "step") return [Math.max(0, Math.floor(lo)), Math.ceil(hi)];
  let s0 = Infinity, s1 = -Infinity;
  for (const s of loaded) {
    for (let i = 0; i < s.steps.length; i++) {
      if (s.epochs[i] >= lo && s.epochs[i] <= hi) { s0 = Math.min(s0, s.steps[i]); s1 = Math.max(s1, s.steps[i]); }
    }
  }
  return s0 === Infinity ? null : [s0, s1];
}

// A chart of one metric key over runs: runs = [{run_id, label}]. Returns {reload(), destroy(), chart}.
export function metricChart(container, key, runs, getUnit) {
  let range = null; // [min_step, max_step] while zoomed
  let loaded = [];
  const chart = new LineChart(container, {
    title: key,
    onZoom: (lo, hi) => {
      range = lo === null ? null : stepRange(loaded, getUnit(), lo, hi);
      reload();
    },
  });
  chart.canvas.dataset.key = key;

  async function fetchSeries() {
    const params = { max_points: MAX_POINTS, min_step: range?.[0], max_step: range?.[1] };
    if (runs.length === 1) {
      return [await get(`/runs/${encodeURIComponent(runs[0].run_id)}/metrics/${key.split("/").map(encodeURIComponent).join("/")}`, params)];
    }
    if (range) { // the compare endpoint has no range: one ranged read per run
      return Promise.all(runs.map((r) => get(`/runs/${encodeURIComponent(r.run_id)}/metrics/${key.split("/").map(encodeURIComponent).join("/")}`, params)));
    }
    return (await get("/metrics/compare", { run_id: runs.map((r) => r.run_id), key, max_points: MAX_POINTS })).series;
  }

  function paint() {
    const unit = getUnit();
    const label = Object.fromEntries(runs.map((r) => [r.run_id, r.label]));
    const total = loaded.reduce((n, s) => n + s.total_points, 0);
    const returned = loaded.reduce((n, s) => n + s.returned_points, 0);
    const note = `${returned.toLocaleString()} of ${total.toLocaleString()} points${range ? ` · steps ${range[0]}–${range[1]} (double-click: all)` : ""}`;
    const colour = Object.fromEntries(runs.map((r, i) => [r.run_id, PALETTE[i % PALETTE.length]])); // one per run
    chart.setData(loaded.filter((s) => s.total_points > 0 || runs.length === 1).map((s) => ({
      label: label[s.run_id] || s.run_id, color: colour[s.run_id], xs: xs(s, unit), ys: s.values })),
    { xLabel: unit, note });
    chart.root.dataset.zoomed = range ? "true" : "false";
  }

  async function reload() {
    loaded = (await fetchSeries()).filter(Boolean);
    paint();
  }

  return { chart, reload, paint, zoomed: () => range !== null, destroy: () => chart.destroy() };
}
