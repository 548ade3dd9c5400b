// Actors: every shard actor with a link to its page in the Ray dashboard, and "where is entity X".

import { getJSON, query } from "./api.js";
import { repeat } from "./poll.js";
import { el, fields, link, replace, table, text } from "./render.js";

const DASHBOARD_KEY = "commerce.console.dashboard";
const DEFAULT_DASHBOARD = "http://127.0.0.1:8265";
const REFRESH_MS = 5000;

function dashboardBase() {
  return localStorage.getItem(DASHBOARD_KEY) || DEFAULT_DASHBOARD;
}

// The dashboard's actor page, or null when the configured base is not an http(s) URL.
function actorLink(base, actorId) {
  try {
    const url = new URL(base);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return `${url.origin}${url.pathname.replace(/\/+$/, "")}/#/actors/${encodeURIComponent(actorId)}`;
  } catch {
    return null;
  }
}

function ofMax(active, max) {
  return `${text(active)} / ${text(max)}`;
}

export function render(root, ctx) {
  root.dataset.testid = "actors";
  const base = el("input", { id: "dashboard-base", testid: "dashboard-base", size: 32, value: dashboardBase() });
  const baseForm = el("form", { class: "filters" },
    el("label", {}, "Ray dashboard ", base), " ", el("button", { type: "submit", testid: "dashboard-save" }, "Use"));
  const list = el("div", {}, "Loading…");
  const entity = el("input", { id: "locate-entity", testid: "locate-entity", placeholder: "order or SKU UUID", size: 38 });
  const locateForm = el("form", { class: "filters", testid: "locate-form" },
    el("label", {}, "Where is entity ", entity), " ", el("button", { type: "submit", id: "locate-button", testid: "locate-button" }, "Locate"));
  const located = el("div", { testid: "locate-result" });
  replace(root,
    el("h2", {}, "Actors"), baseForm,
    el("section", { class: "panel" }, list),
    el("section", { class: "panel" }, el("h3", {}, "Locate an entity"), locateForm, located));

  let items = [];

  function draw() {
    const dashboard = dashboardBase();
    replace(list, table({
      testid: "actors-table", rowTestid: "actor-row",
      rowData: (a) => ({ actorId: a.actor_id, kind: a.kind, shard: a.shard }),
      empty: "No actor answered.",
      columns: [
        { title: "Kind", cell: (a) => a.kind },
        { title: "Shard", cell: (a) => a.shard },
        { title: "Actor", cell: (a) => {
          const href = actorLink(dashboard, a.actor_id);
          return href ? link(href, text(a.actor_id), { target: "_blank", rel: "noopener noreferrer", class: "mono" }) : el("span", { class: "mono" }, text(a.actor_id));
        } },
        { title: "Node", cell: (a) => el("span", { class: "mono", title: text(a.node_id) }, text(a.node_id).slice(0, 12)) },
        { title: "PID", cell: (a) => a.pid },
        { title: "Restarts", cell: (a) => (typeof a.restarts === "number" && a.restarts < 0 ? "unknown" : a.restarts) },
        { title: "Active / max entities", cell: (a) => ofMax(a.active_entities, a.max_active_entities) },
        { title: "Mailbox", cell: (a) => a.mailbox_depth },
        { title: "Sagas running", cell: (a) => a.sagas_running },
        { title: "Conflicts", cell: (a) => a.conflicts },
      ],
      rows: items,
    }), el("p", { class: "muted" }, `${items.length} actors; refreshes every ${REFRESH_MS / 1000} s.`));
  }

  async function refresh(stopped) {
    const answer = await getJSON("/api/v1/admin/actors");
    if (stopped()) return;
    if (JSON.stringify(answer.items) !== JSON.stringify(items) || !list.querySelector("table")) {
      items = answer.items; // drawn again only when something changed
      draw();
    }
  }

  baseForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = base.value.trim() || DEFAULT_DASHBOARD;
    if (!actorLink(value, "x")) {
      ctx.fail(new Error(`Not an http(s) URL: ${value}`));
      return;
    }
    localStorage.setItem(DASHBOARD_KEY, value);
    draw();
  });

  locateForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = entity.value.trim();
    if (!id) return;
    replace(located, "Looking…");
    located.dataset.state = "loading";
    try {
      const answer = await getJSON(query("/api/v1/admin/actors/locate", { entity_id: id }));
      if (loop.stopped()) return;
      replace(located, fields(Object.entries(answer).map(([key, value]) => [key, text(value), `locate-${key}`])));
      located.dataset.state = "ready";
    } catch (error) {
      if (loop.stopped()) return;
      located.dataset.state = "error";
      replace(located, el("p", { class: "error-text" }, error.message));
      if (error.status === 401) ctx.fail(error);
    }
  });

  const loop = repeat(root, ctx, REFRESH_MS, refresh);
  return loop.stop;
}
