// The dashboard's router: hash routes to views; each view renders into <main id="view"> and may return a
// cleanup function (timers, chart listeners) run when the route changes.

import { getToken, setToken, whoami } from "./api.js";
import { compareView } from "./views/compare.js";
import { jobsView } from "./views/jobs.js";
import { modelView, modelsView } from "./views/models.js";
import { runView } from "./views/run.js";
import { runsView } from "./views/runs.js";
import { errorBox } from "./util.js";

const routes = [
  [/^\/?$/, runsView, "runs"],
  [/^\/runs$/, runsView, "runs"],
  [/^\/run\/([^/]+)$/, runView, "runs"],
  [/^\/compare$/, compareView, "runs"],
  [/^\/models$/, modelsView, "models"],
  [/^\/model\/([^/]+)$/, modelView, "models"],
  [/^\/jobs$/, jobsView, "jobs"],
];

let cleanup = null;
let generation = 0;

async function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++generation;
  const hash = (window.location.hash || "#/").slice(1);
  const path = hash.split("?")[0];
  const main = document.getElementById("view");
  for (const [pattern, view, nav] of routes) {
    const match = path.match(pattern);
    if (!match) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    const container = document.createElement("div");
    main.replaceChildren(container); // attached first, so charts can measure their width
    delete document.body.dataset.ready;
    try {
      const done = await view(container, ...match.slice(1).map(decodeURIComponent));
      if (mine !== generation) { if (typeof done === "function") done(); return; }
      cleanup = typeof done === "function" ? done : null;
    } catch (error) {
      if (mine !== generation) return;
      container.replaceChildren(errorBox(error));
    }
    document.body.dataset.view = nav;
    document.body.dataset.ready = hash; // the route rendered (tests wait for it to equal the current hash)
    return;
  }
  main.replaceChildren(errorBox(`no page ${path}`));
}

async function showTokenState() {
  const me = await whoami();
  const state = document.getElementById("token-state");
  state.textContent = me.role ? `${me.role} token` : getToken() ? "token refused" : "no token (open reads?)";
  state.dataset.role = me.role || "";
}

document.getElementById("token").value = getToken();
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(document.getElementById("token").value.trim());
  showTokenState();
  render();
});
showTokenState();
window.addEventListener("hashchange", render);
render();
