// Inventory: one SKU's stock and its recent events.

import { ApiError, getJSON, query } from "./api.js";
import { el, fields, replace, table, text, time } from "./render.js";

const SHOWN = 100;
const MAX_PAGES = 20;

// The SKU's events, oldest first: its stream is short, so read it forward to the end.
async function streamOf(productId) {
  let items = [];
  let after = 0;
  for (let i = 0; i < MAX_PAGES; i += 1) {
    const answer = await getJSON(query("/api/v1/admin/events", { aggregate_id: productId, after_position: after, limit: 500 }));
    items = [...items, ...answer.items].slice(-SHOWN);
    if (answer.next_position === null || answer.next_position === undefined) break;
    after = answer.next_position;
  }
  return items;
}

export function render(root, ctx) {
  root.dataset.testid = "inventory";
  const productId = ctx.match[1] || "";
  const sku = el("input", { id: "sku-input", testid: "sku-input", placeholder: "product UUID", size: 38, value: productId });
  const form = el("form", { class: "filters", testid: "sku-form" },
    el("label", {}, "SKU ", sku), " ", el("button", { type: "submit", id: "sku-button", testid: "sku-button" }, "Show"));
  const stock = el("div", { testid: "stock-box" });
  const events = el("div");
  replace(root, el("h2", {}, "Inventory"), form,
    el("div", { class: "columns" },
      el("section", { class: "panel" }, el("h3", {}, "Stock"), stock),
      el("section", { class: "panel" }, el("h3", {}, "Recent events"), events)));

  let stopped = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = sku.value.trim();
    if (id) ctx.navigate(`#/inventory/${encodeURIComponent(id)}`);
  });

  async function load() {
    if (!productId) {
      replace(stock, el("p", { class: "muted" }, "Enter a SKU (product id)."));
      root.dataset.state = "ready";
      return;
    }
    try {
      const item = await getJSON(`/api/v1/inventory/${encodeURIComponent(productId)}`);
      if (stopped) return;
      replace(stock, fields([
        ["Product", item.product_id, "stock-product-id"],
        ["Name", item.name, "stock-name"],
        ["Price", item.price, "stock-price"],
        ["On hand", item.on_hand, "stock-on-hand"],
        ["Reserved", item.reserved, "stock-reserved"],
        ["Available", item.available, "stock-available"],
        ["Version", item.version, "stock-version"],
      ], "stock"));
      const items = await streamOf(productId);
      if (stopped) return;
      replace(events, table({
        testid: "sku-events", rowTestid: "sku-event", rowData: (e) => ({ position: e.position, eventType: e.event_type }),
        empty: "No event for this SKU.",
        columns: [
          { title: "Position", cell: (e) => e.position },
          { title: "v", cell: (e) => e.version },
          { title: "Event", cell: (e) => e.event_type },
          { title: "At", cell: (e) => time(e.created_at) },
          { title: "Data", cell: (e) => el("code", { class: "data" }, text(e.data)) },
        ],
        rows: items.slice().reverse(),
      }));
      root.dataset.state = "ready";
      ctx.clearError();
    } catch (error) {
      if (stopped) return;
      root.dataset.state = "error";
      replace(stock, el("p", { class: "error-text", testid: "stock-error" },
        error instanceof ApiError && error.status === 404 ? `No such SKU: ${productId}` : error.message));
      if (!(error instanceof ApiError && error.status === 404)) ctx.fail(error);
    }
  }

  load();
  return () => {
    stopped = true;
  };
}
