// Events: a tail of the event store, newest first, following next_position, with filters.

import { getJSON, query } from "./api.js";
import { repeat } from "./poll.js";
import { el, replace, table, text, time } from "./render.js";

const EVENTS = "/api/v1/admin/events";
const POLL_MS = 2000;
const BACKLOG = 100; // positions shown before the latest when following from "latest"
const KEEP = 300; // rows kept on the page
const PAGES_PER_POLL = 5;

function page(filters, after, limit) {
  return getJSON(query(EVENTS, { ...filters, after_position: after, limit }));
}

// A position after which no event matches the filters (at most one past the last match): the
// events API only reads forward, so search for it with a few dozen one-item reads.
async function endPosition(filters) {
  const after = async (p) => (await page(filters, p, 1)).items;
  let low = 0;
  let high = 1024;
  for (;;) {
    const found = await after(high);
    if (!found.length) break;
    low = found[0].position;
    high = Math.max(high * 2, low + 1);
  }
  // low is 0 or a matching position; nothing matches after high
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    const found = await after(mid);
    if (found.length) low = found[0].position;
    else high = mid;
  }
  return high;
}

export function render(root, ctx) {
  root.dataset.testid = "events";
  const p = ctx.params;
  const input = (name, placeholder, size) => el("input", { id: `events-${name}`, testid: `events-${name}`, name, placeholder, size, value: p.get(name) || "" });
  const aggregateType = input("aggregate_type", "e.g. Order", 18);
  const eventType = input("event_type", "e.g. OrderCreated", 18);
  const aggregateId = input("aggregate_id", "UUID", 38);
  const from = el("input", { id: "events-from", testid: "events-from", name: "from", type: "number", min: 0, placeholder: "latest", value: p.get("from") || "" });
  const form = el("form", { class: "filters", testid: "events-filters" },
    el("label", {}, "Aggregate type ", aggregateType),
    el("label", {}, "Event type ", eventType),
    el("label", {}, "Aggregate ", aggregateId),
    el("label", {}, "After position ", from),
    el("button", { type: "submit", testid: "events-apply" }, "Follow"));
  const pause = el("button", { type: "button", id: "events-pause", testid: "events-pause" }, "Pause");
  const status = el("p", { class: "muted", testid: "events-status" }, "Finding the end of the store…");
  const list = el("div");
  replace(root, el("h2", {}, "Event store tail"), form, el("p", {}, pause, " ", status), list);

  const filters = { aggregate_type: p.get("aggregate_type"), event_type: p.get("event_type"), aggregate_id: p.get("aggregate_id") };
  let rows = [];
  let cursor = null;
  let paused = false;
  let loop = null;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate(`#/${query("events", {
      aggregate_type: aggregateType.value.trim(), event_type: eventType.value.trim(), aggregate_id: aggregateId.value.trim(), from: from.value,
    })}`);
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) loop.again();
  });

  function draw() {
    replace(list, table({
      testid: "events-table", rowTestid: "event-row", rowData: (e) => ({ position: e.position, eventType: e.event_type }),
      empty: "No event yet; new ones show up here.",
      columns: [
        { title: "Position", cell: (e) => e.position },
        { title: "At", cell: (e) => time(e.created_at) },
        { title: "Aggregate", cell: (e) => el("span", {}, text(e.aggregate_type), " ", el("a", { href: `#/events?aggregate_id=${encodeURIComponent(e.aggregate_id)}`, class: "mono" }, text(e.aggregate_id))) },
        { title: "v", cell: (e) => e.version },
        { title: "Event", cell: (e) => e.event_type },
        { title: "Data", cell: (e) => el("code", { class: "data" }, text(e.data)) },
      ],
      rows,
    }));
  }

  async function poll(stopped) {
    if (cursor === null) {
      const start = p.get("from");
      cursor = start !== null && start !== "" ? Math.max(0, Number(start) || 0) : Math.max(0, (await endPosition(filters)) - BACKLOG);
    }
    const before = rows.length ? rows[0].position : null;
    for (let i = 0; i < PAGES_PER_POLL && !stopped(); i += 1) {
      const answer = await page(filters, cursor, 200);
      if (stopped()) return;
      if (answer.items.length) {
        cursor = answer.items.at(-1).position;
        rows = [...answer.items.slice().reverse(), ...rows].slice(0, KEEP);
      }
      if (answer.next_position === null || answer.next_position === undefined) break;
      cursor = answer.next_position;
    }
    if (!list.firstChild || (rows.length && rows[0].position !== before)) draw(); // only when new events came
    status.textContent = `Following after position ${cursor}; polled ${new Date().toLocaleTimeString(undefined, { hour12: false })}; newest first, last ${KEEP} kept.`;
  }

  loop = repeat(root, ctx, POLL_MS, poll, { paused: () => paused });
  return loop.stop;
}
