// Sagas: filters (status, order id, stuck for N seconds) kept in the hash, and cursor paging.

import { getJSON, query } from "./api.js";
import { badge, el, page, replace, table, time } from "./render.js";

const STATUSES = ["RUNNING", "COMPENSATING", "FAILED", "COMPENSATED", "COMPLETED"];
const LIMITS = ["25", "50", "100", "200"];

export function render(root, ctx) {
  root.dataset.testid = "sagas";
  const p = ctx.params;
  const status = el("select", { id: "saga-status", testid: "saga-status", name: "status" },
    el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: p.get("status") === s }, s)));
  const orderId = el("input", { id: "saga-order-id", testid: "saga-order-id", name: "order_id", placeholder: "order UUID", size: 38, value: p.get("order_id") || "" });
  const stuckFor = el("input", { id: "saga-stuck-for", testid: "saga-stuck-for", name: "stuck_for", type: "number", min: 0, step: 1, placeholder: "seconds", value: p.get("stuck_for") || "" });
  const limit = el("select", { id: "saga-limit", testid: "saga-limit", name: "limit" },
    LIMITS.map((n) => el("option", { value: n, selected: (p.get("limit") || "50") === n }, n)));
  const form = el("form", { class: "filters", testid: "saga-filters" },
    el("label", {}, "Status ", status),
    el("label", {}, "Order ", orderId),
    el("label", {}, "Not moved for ", stuckFor, " s"),
    el("label", {}, "Per page ", limit),
    el("button", { type: "submit", id: "saga-search", testid: "saga-search" }, "Search"));
  const results = el("div", { testid: "saga-results" }, "Loading…");
  const previous = el("button", { type: "button", id: "sagas-prev", testid: "sagas-prev", disabled: true }, "Previous page");
  const next = el("button", { type: "button", id: "sagas-next", testid: "sagas-next", disabled: true }, "Next page");
  const where = el("span", { class: "muted", testid: "sagas-page" });
  replace(root, el("h2", {}, "Sagas"), form, results, el("p", { class: "pager" }, previous, " ", where, " ", next));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate(`#/${query("sagas", { status: status.value, order_id: orderId.value.trim(), stuck_for: stuckFor.value, limit: limit.value })}`);
  });

  const cursors = [null]; // cursors[i] fetches page i + 1
  let current = 0;
  let stopped = false;

  async function load(index) {
    previous.disabled = next.disabled = true;
    root.dataset.state = "loading";
    try {
      const answer = await getJSON(query("/api/v1/admin/sagas", {
        status: p.get("status"), order_id: p.get("order_id"), stuck_for: p.get("stuck_for"), limit: p.get("limit") || "50", cursor: cursors[index],
      }));
      if (stopped) return;
      current = index;
      cursors.length = index + 1;
      if (answer.next_cursor) cursors.push(answer.next_cursor);
      replace(results, table({
        testid: "sagas-table", rowTestid: "saga-row", rowData: (s) => ({ sagaId: s.saga_id, status: s.status }),
        empty: "No saga matches.",
        columns: [
          { title: "Saga", cell: (s) => page(`sagas/${encodeURIComponent(s.saga_id)}`, s.saga_id, { "data-testid": "saga-link" }) },
          { title: "Type", cell: (s) => s.saga_type },
          { title: "Order", cell: (s) => s.order_id },
          { title: "Status", cell: (s) => badge(s.status) },
          { title: "Step", cell: (s) => s.current_step },
          { title: "Attempts", cell: (s) => s.attempts },
          { title: "Created", cell: (s) => time(s.created_at) },
          { title: "Updated", cell: (s) => time(s.updated_at) },
        ],
        rows: answer.items,
      }));
      where.textContent = `page ${current + 1}`;
      previous.disabled = current === 0;
      next.disabled = !answer.next_cursor;
      root.dataset.state = "ready";
    } catch (error) {
      if (stopped) return;
      replace(results, el("p", { class: "error-text", testid: "sagas-error" }, error.message));
      previous.disabled = current === 0;
      next.disabled = cursors.length <= current + 1;
      root.dataset.state = "error";
      ctx.fail(error);
    }
  }

  previous.addEventListener("click", () => load(Math.max(0, current - 1)));
  next.addEventListener("click", () => load(current + 1));
  load(0);
  return () => {
    stopped = true;
  };
}
