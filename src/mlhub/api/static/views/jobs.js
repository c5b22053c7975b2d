// Jobs: queued, running, finished and failed jobs with their worker and attempts; cancel a queued or running one.

import { get, post, whoami } from "../api.js";
import { badge, errorBox, fmtTime, go, h, routeParams, shortId, table } from "../util.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];

export async function jobsView(root, minSeq) {
  const q = routeParams();
  const status = q.get("status") || "";
  const tokens = (q.get("pages") || "").split(",").filter(Boolean);
  const [page, me] = await Promise.all([get("/jobs", { status: status || undefined, max_results: 50,
    page_token: tokens[tokens.length - 1], min_seq: minSeq }), whoami()]);
  const message = h("div", { id: "jobs-message" });
  const cancel = async (job) => {
    message.replaceChildren();
    try {
      const result = await post(`/jobs/${job.job_id}/cancel`, { reason: "cancelled from the dashboard" });
      const next = h("div");
      root.replaceWith(next);
      await jobsView(next, result.seq);
      next.querySelector("#jobs-message").replaceChildren(h("p", { class: "ok" }, `job ${shortId(job.job_id)} cancelled`));
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  };
  root.append(h("h2", {}, "Jobs"),
    h("nav", { class: "tabs" }, STATUSES.map((s) => h("a", { href: `#/jobs${s ? `?status=${s}` : ""}`,
      class: s === status ? "active" : "", "data-status": s || "all" }, s || "all"))),
    message,
    table(["job", "run", "plugin", "status", "worker", "attempts", "queued", "started", "ended", "error", ""],
      page.data.map((j) => h("tr", { "data-job": j.job_id },
        h("td", {}, h("code", {}, shortId(j.job_id))),
        h("td", {}, j.run_id ? h("a", { href: `#/run/${j.run_id}` }, shortId(j.run_id)) : ""),
        h("td", {}, j.plugin ?? ""), h("td", {}, badge(j.status)), h("td", {}, j.worker_id ?? ""),
        h("td", { class: "num" }, `${j.attempts}/${j.max_attempts ?? "?"}`),
        h("td", {}, fmtTime(j.queued_at)), h("td", {}, fmtTime(j.started_at)), h("td", {}, fmtTime(j.ended_at)),
        h("td", { class: "muted" }, j.error_type ? `${j.error_type}: ${j.error ?? ""}`.slice(0, 120) : (j.cancel_reason ?? "")),
        h("td", {}, ["queued", "running"].includes(j.status) && me.can_write  // cancelling needs a writer token
          ? h("button", { class: "cancel", onclick: () => cancel(j) }, "Cancel") : ""))),
      { id: "jobs", class: "grid" }),
    page.count ? "" : h("p", { class: "muted" }, "No job."),
    h("div", { class: "pager" },
      h("button", { disabled: tokens.length === 0, onclick: () => go("/jobs", { status, pages: tokens.slice(0, -1).join(",") }) }, "‹ Previous"),
      h("button", { disabled: !page.next_page_token, onclick: () => go("/jobs", { status, pages: [...tokens, page.next_page_token].join(",") }) }, "Next ›")));
}
