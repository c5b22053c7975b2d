// A run: provenance (config snapshot, seed, dataset, code version with the dirty flag, environment, lineage),
// params, one chart per metric key (x: step or epoch, zoom) updating live while the run trains, artifacts with
// download, and the run's event timeline read from the event log.

import { download, get, post, whoami } from "../api.js";
import { formatNumber } from "../chart.js";
import { badge, duration, errorBox, fmtTime, h, kv, shortId, table } from "../util.js";
import { metricChart } from "./series.js";

const LIVE_EVERY_MS = 2000;
const LIVE = new Set(["created", "queued", "running", "started"]);

function provenance(detail) {
  const { run, lineage } = detail;
  const code = lineage.code;
  return h("section", { class: "provenance" },
    h("h3", {}, "Provenance"),
    kv([
      ["experiment", h("a", { href: `#/runs?experiment=${encodeURIComponent(run.experiment_id)}` }, run.experiment_id)],
      ["job", lineage.job ? `${lineage.job.job_id} (${lineage.job.status}, attempts ${lineage.job.attempts})` : null],
      ["seed", run.seed !== null ? `${run.seed}${run.seed_source ? ` (${run.seed_source})` : ""}` : null],
      ["config sha256", lineage.config_sha256],
      ["dataset", lineage.dataset.name ? `${lineage.dataset.name} · ${lineage.dataset.size_bytes ?? "?"} bytes` +
        (lineage.dataset.num_examples != null ? ` · ${lineage.dataset.num_examples} examples` : "") : null],
      ["dataset fingerprint", lineage.dataset.fingerprint ? h("code", { id: "dataset-fingerprint" }, lineage.dataset.fingerprint) : null],
      ["code", code.git_commit || code.git_dirty != null ? h("span", { id: "code-version" },
        h("code", {}, code.git_commit || "no commit"), " ",
        code.git_dirty ? h("span", { class: "badge dirty", title: `uncommitted changes, diff sha256 ${code.git_diff_sha256 || "?"}` }, "dirty")
          : code.git_dirty === false ? h("span", { class: "badge clean" }, "clean") : "",
        code.git_repository ? ` ${code.git_repository}` : "") : null],
      ["environment", Object.values(lineage.environment).some((v) => v) ? h("span", { id: "environment" },
        Object.entries(lineage.environment).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(" · ")) : null],
      ["reproduces", lineage.reproduces_run_id ? h("a", { href: `#/run/${lineage.reproduces_run_id}` }, lineage.reproduces_run_id) : null],
      ["reproduced by", lineage.reproduced_by.length ? lineage.reproduced_by.map((r) => h("a", { href: `#/run/${r}` }, shortId(r), " ")) : null],
      ["model versions", lineage.model_versions.length ? lineage.model_versions.map((m) =>
        h("a", { href: `#/model/${encodeURIComponent(m.model_name)}` }, `${m.model_name} v${m.version} `)) : null],
    ]),
    run.config ? h("details", { class: "config", open: true }, h("summary", {}, "Config snapshot"),
      h("pre", { id: "config-snapshot" }, JSON.stringify(run.config, null, 2)),
      run.config_overrides?.length ? h("p", {}, "overrides: ", h("code", {}, run.config_overrides.join(" "))) : null)
      : h("p", { class: "muted" }, "No config snapshot (a run tracked from a script)."));
}

function artifacts(detail) {
  const run = detail.run;
  if (!detail.artifacts.length) return h("p", { class: "muted" }, "No artifacts.");
  return table(["path", "kind", "size", "sha256", ""], detail.artifacts.map((a) => h("tr", {},
    h("td", {}, a.path), h("td", {}, a.kind), h("td", { class: "num" }, a.size_bytes.toLocaleString()),
    h("td", {}, h("code", {}, a.sha256.slice(0, 12))),
    h("td", {}, h("button", { class: "download", "data-path": a.path, onclick: async (e) => {
      try { await download(`/runs/${run.run_id}/artifacts/${a.path}`, a.path.split("/").pop()); } catch (err) {
        e.target.after(errorBox(err));
      }
    } }, "Download")))), { id: "artifacts", class: "grid" });
}

function summarize(event) {
  const skip = new Set(["seq", "subject", "event_id", "type", "schema_version", "occurred_at", "producer", "correlation_id", "run_id"]);
  const payload = event.payload || {};
  if (payload.series) return payload.series.map((s) => `${s.key}: ${s.values.length} points`).join(", ");
  return Object.entries(payload).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ").slice(0, 200);
}

async function timeline(runId) {
  const events = await get(`/runs/${runId}/events`, { limit: 500 });
  return h("div", {},
    table(["seq", "time", "type", "what"], events.data.map((e) => h("tr", {},
      h("td", { class: "num" }, e.seq), h("td", {}, fmtTime(e.occurred_at)), h("td", {}, e.type),
      h("td", { class: "muted" }, summarize(e)))), { id: "timeline", class: "grid" }),
    events.next_from_seq ? h("p", { class: "muted" }, "(first 500 events)") : null);
}

// Ending a run by hand (POST /runs/{id}/end): a script's run left running, or a crashed one, for a writer token.
// A job's running run is ended by cancelling its job (the Jobs page), so it gets no button here.
function endControl(runId, detail, me, root, minSeqView) {
  const run = detail.run;
  const endable = run.status === "crashed" || (run.status === "running" && !run.job_id);
  if (!me.can_write || !endable) return null;
  const message = h("span", { id: "end-message" });
  const pick = h("select", { id: "end-status" }, ["killed", "failed", "finished"].map((s) => h("option", { value: s }, s)));
  const button = h("button", { id: "end-run", onclick: async () => {
    message.replaceChildren();
    button.disabled = true;
    try {
      const result = await post(`/runs/${runId}/end`, { status: pick.value, reason: "ended from the dashboard" });
      await minSeqView(result.seq);
    } catch (error) {
      message.replaceChildren(errorBox(error));
      button.disabled = false;
    }
  } }, "End run");
  return h("span", { class: "end-run" }, " ", pick, " ", button, " ", message);
}

export async function runView(root, runId, minSeq) {
  let [detail, me] = await Promise.all([get(`/runs/${runId}`, { min_seq: minSeq }), whoami()]);
  const run = detail.run;
  const status = h("span", { id: "run-status" }, badge(run.status));
  let stop = () => {};
  const reopen = async (seq) => {  // the view again, once the read model has the end
    stop();
    const next = h("div");
    root.replaceWith(next);
    stop = await runView(next, runId, seq);
  };
  const timing = h("span", { class: "muted" });
  const showTiming = () => { timing.textContent = `started ${fmtTime(detail.run.started_at) || "—"} · ${duration(detail.run)}`; };
  showTiming();
  let unit = "step";
  const unitPick = h("select", { id: "x-unit", onchange: (e) => { unit = e.target.value; charts.forEach((c) => c.paint()); } },
    h("option", { value: "step" }, "x: step"), h("option", { value: "epoch" }, "x: epoch"));
  const chartGrid = h("div", { class: "charts", id: "charts" });
  const timelineBox = h("section", {}, h("h3", {}, "Event timeline (from the event log)"));
  root.append(
    h("h2", {}, run.name || runId, " ", status, endControl(runId, detail, me, root, reopen)),
    h("p", { class: "muted" }, h("code", {}, runId), " · ", timing),
    h("div", { class: "two" }, provenance(detail), h("section", {}, h("h3", {}, "Params"),
      table(["param", "value"], Object.entries(detail.params).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))),
        { id: "params", class: "grid" }),
      h("h3", {}, "Metrics"),
      table(["key", "last", "min", "max", "points"], detail.metrics.map((m) => h("tr", {}, h("td", {}, m.key),
        h("td", { class: "num" }, formatNumber(m.last_value)), h("td", { class: "num" }, formatNumber(m.min_value)),
        h("td", { class: "num" }, formatNumber(m.max_value)), h("td", { class: "num" }, m.count))), { class: "grid" }))),
    h("section", {}, h("h3", {}, "Charts ", unitPick), chartGrid),
    h("section", {}, h("h3", {}, "Artifacts"), artifacts(detail)),
    timelineBox);

  const charts = new Map();
  const label = [{ run_id: runId, label: run.name || runId }];
  const addCharts = (keys) => keys.filter((k) => !charts.has(k)).map((k) => {
    chartGrid.querySelector(".no-metrics")?.remove();
    const c = metricChart(chartGrid, k, label, () => unit);
    charts.set(k, c);
    return c.reload();
  });
  await Promise.all(addCharts(detail.metrics.map((m) => m.key)));
  if (!charts.size) chartGrid.append(h("p", { class: "muted no-metrics" }, "No metrics logged yet."));
  timeline(runId).then((t) => timelineBox.append(t), (e) => timelineBox.append(errorBox(e)));

  // Live: while the run may still log, poll its summary and redraw the (unzoomed) charts.
  let timer = null;
  let busy = false;
  if (LIVE.has(run.status)) {
    timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        detail = await get(`/runs/${runId}`);
        status.replaceChildren(badge(detail.run.status));
        showTiming();
        const fresh = addCharts(detail.metrics.map((m) => m.key));
        await Promise.all([...fresh, ...[...charts.values()].filter((c) => !c.zoomed()).map((c) => c.reload())]);
        if (!LIVE.has(detail.run.status)) { clearInterval(timer); timer = null; }
      } catch (_) { /* the next tick tries again */ } finally { busy = false; }
    }, LIVE_EVERY_MS);
  }
  stop = () => {
    if (timer) clearInterval(timer);
    charts.forEach((c) => c.destroy());
  };
  return () => stop();
}
