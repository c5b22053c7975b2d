// Models: registered models; a model's versions, aliases with their history, and promotion (the API checks the
// token's role: a protected alias such as production needs an admin token, and the registry's gates).

import { get, post, whoami } from "../api.js";
import { errorBox, fmtTime, h, shortId, table } from "../util.js";

export async function modelsView(root) {
  const models = await get("/models");
  root.append(h("h2", {}, "Registered models"),
    models.count ? table(["model", "latest version", "updated"], models.data.map((m) => h("tr", { "data-model": m.model_name },
      h("td", {}, h("a", { href: `#/model/${encodeURIComponent(m.model_name)}` }, m.model_name)),
      h("td", { class: "num" }, m.latest_version), h("td", {}, fmtTime(m.updated_at)))), { id: "models", class: "grid" })
      : h("p", { class: "muted" }, "No model is registered yet (mlhub models register)."));
}

async function history(name, alias, minSeq) {
  const h_ = await get(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}/history`,
    { min_seq: minSeq });
  return table(["seq", "when", "change", "who", "why"], h_.data.map((e) => h("tr", {},
    h("td", { class: "num" }, e.seq), h("td", {}, fmtTime(e.occurred_at)),
    h("td", {}, e.action === "removed" ? `v${e.from_version} → (removed)` : `${e.from_version ? `v${e.from_version}` : "(none)"} → v${e.to_version}`),
    h("td", {}, e.actor), h("td", {}, e.reason))), { class: "grid history", "data-alias": alias });
}

export async function modelView(root, name, minSeq) {
  const [model, me] = await Promise.all([get(`/models/${encodeURIComponent(name)}`, { min_seq: minSeq }), whoami()]);
  const aliasesOf = (v) => model.aliases.filter((a) => a.version === v.version).map((a) => a.alias).join(", ");
  const aliasInput = h("input", { id: "promote-alias", list: "alias-names", required: true, placeholder: "alias, e.g. staging",
    pattern: "[A-Za-z0-9_-]{1,128}" });
  const versionPick = h("select", { id: "promote-version" },
    model.versions.slice().reverse().map((v) => h("option", { value: v.version }, `v${v.version}`)));
  const reason = h("input", { id: "promote-reason", placeholder: "why (recorded in the history)", size: 40 });
  const message = h("div", { id: "promote-message" });
  const form = h("form", { class: "promote", onsubmit: async (e) => {
    e.preventDefault();
    message.replaceChildren();
    const alias = aliasInput.value.trim();
    const current = model.aliases.find((a) => a.alias === alias);
    try {
      // expected_current: what this page shows, so a promotion made meanwhile by someone else is refused (409)
      const result = await post(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, {
        version: Number(versionPick.value), reason: reason.value, expected_current: current ? current.version : null });
      const next = h("div");
      root.replaceWith(next);
      await modelView(next, name, result.seq ?? undefined);
      next.querySelector("#promote-message").replaceChildren(h("p", { class: "ok" },
        result.changed ? `${alias} now points to v${result.version}` : `${alias} already pointed to v${result.version}`));
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  } }, "Promote ", versionPick, " to ", aliasInput, " ", reason, " ",
  h("button", { type: "submit", disabled: !me.can_write, title: me.can_write ? "" : "needs a writer or admin token" },
    "Promote"),
  h("datalist", { id: "alias-names" }, ["staging", "production", ...model.aliases.map((a) => a.alias)]
    .filter((a, i, all) => all.indexOf(a) === i).map((a) => h("option", { value: a }))));

  const histories = h("div", { id: "alias-histories" });
  root.append(h("h2", {}, `Model ${name}`),
    h("section", {}, h("h3", {}, "Versions"), table(["version", "run", "artifact", "registered", "by", "aliases"],
      model.versions.map((v) => h("tr", { "data-version": v.version }, h("td", { class: "num" }, `v${v.version}`),
        h("td", {}, h("a", { href: `#/run/${v.run_id}` }, shortId(v.run_id))), h("td", {}, v.artifact_path),
        h("td", {}, fmtTime(v.registered_at)), h("td", {}, v.registered_by ?? ""), h("td", {}, aliasesOf(v)))),
      { id: "versions", class: "grid" })),
    h("section", {}, h("h3", {}, "Aliases"), table(["alias", "version", "set by", "when", "why"],
      model.aliases.map((a) => h("tr", { "data-alias": a.alias }, h("td", {}, a.alias), h("td", { class: "num" }, `v${a.version}`),
        h("td", {}, a.set_by), h("td", {}, fmtTime(a.set_at)), h("td", {}, a.reason))), { id: "aliases", class: "grid" })),
    h("section", {}, h("h3", {}, "Promote"), form, message,
      h("p", { class: "muted", id: "promote-rights" }, me.can_write
        ? `Your ${me.role} token may promote${me.can_admin ? " to any alias" : `, except to the protected aliases (${me.protected_aliases.join(", ")}), which need an admin token`}. The registry's gates apply.`
        : "Promoting needs a writer token (an admin token for a protected alias such as production); this token may only read.")),
    h("section", {}, h("h3", {}, "Alias history"), histories));
  for (const a of model.aliases) {
    histories.append(h("h4", {}, a.alias));
    try { histories.append(await history(name, a.alias, minSeq)); } catch (error) { histories.append(errorBox(error)); }
  }
}
