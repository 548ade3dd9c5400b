// Overview: sagas by status, FAILED sagas waiting for an operator, KPIs from /metrics, projections
// and the health checks. Refreshes every 5 s.

import { getHealth, getJSON, getText, query } from "./api.js";
import { byLabel, parseMetrics, total } from "./metrics.js";
import { repeat } from "./poll.js";
import { badge, el, fields, page, replace, seconds, table, text, time } from "./render.js";

const STATUSES = ["RUNNING", "COMPENSATING", "FAILED", "COMPENSATED", "COMPLETED"];
const REFRESH_MS = 5000;
const FAILED_SHOWN = 100;
const HOUR_MS = 3600 * 1000;

// Samples of commerce_orders_total{status="created"} taken while the console is open: the rate
// over the last hour comes from them (the counter alone only says how many since the actors started).
const orderSamples = [];

function ordersPerHour(created, now) {
  if (created === null) return "not available: /metrics has no commerce_orders_total";
  if (orderSamples.length && created < orderSamples.at(-1).value) orderSamples.length = 0; // an actor restarted
  orderSamples.push({ t: now, value: created });
  while (orderSamples.length > 2 && now - orderSamples[1].t >= HOUR_MS) orderSamples.shift();
  const first = orderSamples[0];
  const span = now - first.t;
  if (span < 30000) return `not available yet: measuring since the console opened (${seconds(span / 1000)} so far)`;
  const rate = ((created - first.value) * HOUR_MS) / span;
  return `${rate.toFixed(1)} orders/h (over the last ${seconds(span / 1000)})`;
}

function successRate(counts) {
  if (!counts) return "not available: no saga counts";
  const done = (counts.COMPLETED || 0) + (counts.COMPENSATED || 0) + (counts.FAILED || 0);
  if (!done) return "not available: no saga has finished yet";
  return `${(((counts.COMPLETED || 0) * 100) / done).toFixed(1)} % (${counts.COMPLETED || 0} of ${done} finished sagas completed)`;
}

// Saga counts and the oldest unfinished age: /health's details, else the gauges of /metrics (the
// sagas check leaves its details out when it fails, e.g. while a saga is FAILED).
function sagaFigures(health, metrics) {
  const check = health.checks.sagas || {};
  if (check.counts) {
    return { source: "/health", counts: check.counts, oldest: check.oldest_unfinished_seconds, waiting: check.waiting_for_operator };
  }
  if (metrics && total(metrics, "commerce_sagas") !== null) {
    const counts = Object.fromEntries(Object.entries(byLabel(metrics, "commerce_sagas", "status"))
      .map(([status, n]) => [status.toUpperCase(), n])); // label values are lower case
    return { source: "/metrics", counts, oldest: total(metrics, "commerce_saga_oldest_unfinished_seconds"), waiting: counts.FAILED || 0 };
  }
  return { source: null, counts: null, oldest: null, waiting: null };
}

function projectionRows(health, metrics) {
  const details = (health.checks.event_store || {}).projections;
  if (details) return Object.entries(details).map(([name, p]) => ({ name, ...p }));
  if (!metrics) return [];
  const lagEvents = byLabel(metrics, "commerce_projection_lag_events", "projection");
  const lagSeconds = byLabel(metrics, "commerce_projection_lag_seconds", "projection");
  const errors = byLabel(metrics, "commerce_projection_errors", "projection");
  return Object.keys(lagEvents).map((name) => ({
    name, lag_events: lagEvents[name], lag_seconds: lagSeconds[name], error: errors[name] ? "stopped by an error (see the event_store check)" : null,
  }));
}

function checkDetails(check) {
  const rest = Object.entries(check).filter(([key]) => key !== "status" && key !== "projections");
  return rest.length ? rest.map(([key, value]) => `${key}: ${text(value)}`).join(" · ") : "—";
}

export function render(root, ctx) {
  root.dataset.testid = "overview";
  const updated = el("p", { class: "muted", testid: "overview-updated" }, "Loading…");
  const statusBox = el("div");
  const failedBox = el("div");
  const kpiBox = el("div");
  const projectionBox = el("div");
  const healthBox = el("div");
  replace(root,
    el("h2", {}, "Overview"), updated,
    el("div", { class: "grid" },
      el("section", { class: "panel" }, el("h3", {}, "Sagas by status"), statusBox),
      el("section", { class: "panel" }, el("h3", {}, "Orders and sagas"), kpiBox)),
    el("section", { class: "panel" }, el("h3", {}, "FAILED sagas waiting for an operator"), failedBox),
    el("section", { class: "panel" }, el("h3", {}, "Projections"), projectionBox),
    el("section", { class: "panel" }, el("h3", {}, "Health checks"), healthBox));

  async function refresh(stopped) {
    const [health, metricsText, failed] = await Promise.all([
      getHealth(),
      getText("/metrics").catch((error) => error),
      getJSON(query("/api/v1/admin/sagas", { status: "FAILED", limit: FAILED_SHOWN })),
    ]);
    if (stopped()) return;
    const metrics = typeof metricsText === "string" ? parseMetrics(metricsText) : null;
    const sagasNow = sagaFigures(health, metrics);

    replace(statusBox,
      sagasNow.counts
        ? table({
          testid: "saga-counts",
          columns: [
            { title: "Status", cell: (s) => page(`sagas?status=${s}`, s) },
            { title: "Sagas", cell: (s) => el("span", { testid: `saga-count-${s}` }, String(sagasNow.counts[s] || 0)) },
          ],
          rows: STATUSES,
        })
        : el("p", { testid: "saga-counts-missing" }, "Not available: neither /health nor /metrics gave saga counts."),
      sagasNow.source ? el("p", { class: "muted" }, `From ${sagasNow.source}.`) : null);

    const created = metrics ? total(metrics, "commerce_orders_total", { status: "created" }) : null;
    replace(kpiBox, fields([
      ["Oldest unfinished saga", sagasNow.oldest === null ? "not available" : sagasNow.oldest > 0 ? seconds(sagasNow.oldest) : "none unfinished", "oldest-unfinished"],
      ["Orders per hour", metrics ? ordersPerHour(created, Date.now()) : `not available: ${metricsText.message}`, "orders-per-hour"],
      ["Saga success rate", successRate(sagasNow.counts), "saga-success-rate"],
      ["Orders created / confirmed / cancelled (since the actors started)", metrics
        ? ["created", "confirmed", "cancelled"].map((s) => text(total(metrics, "commerce_orders_total", { status: s }))).join(" / ")
        : "not available", "order-totals"],
    ], "kpis"));

    const more = failed.next_cursor ? page("sagas?status=FAILED", `more than ${FAILED_SHOWN}: see them all`) : null;
    replace(failedBox,
      el("p", {}, "Waiting: ", el("strong", { testid: "failed-count" }, text(sagasNow.waiting ?? failed.items.length)), " ", more),
      table({
        testid: "failed-sagas", rowTestid: "failed-saga", rowData: (s) => ({ sagaId: s.saga_id }),
        empty: "No saga waits for an operator.",
        columns: [
          { title: "Saga", cell: (s) => page(`sagas/${encodeURIComponent(s.saga_id)}`, s.saga_id) },
          { title: "Order", cell: (s) => s.order_id },
          { title: "Step", cell: (s) => s.current_step },
          { title: "Attempts", cell: (s) => s.attempts },
          { title: "Since", cell: (s) => time(s.updated_at) },
        ],
        rows: failed.items,
      }));

    replace(projectionBox, table({
      testid: "projections", rowTestid: "projection", rowData: (p) => ({ projection: p.name }),
      empty: "Not available: no projection details in /health or /metrics.",
      columns: [
        { title: "Projection", cell: (p) => p.name },
        { title: "Position", cell: (p) => p.position },
        { title: "Lag (events)", cell: (p) => p.lag_events },
        { title: "Lag", cell: (p) => (p.lag_seconds === undefined || p.lag_seconds === null ? "—" : seconds(p.lag_seconds)) },
        { title: "Paused", cell: (p) => (p.paused === undefined ? "—" : p.paused ? "yes" : "no") },
        { title: "Parked error", cell: (p) => (p.error ? el("span", { class: "error-text" }, text(p.error)) : "none") },
        { title: "Parked at event", cell: (p) => p.failed_event_id },
      ],
      rows: projectionRows(health, metrics),
    }));

    replace(healthBox,
      el("p", {}, "Service: ", badge(health.status, "health-status")),
      table({
        testid: "health-checks", rowTestid: "health-check", rowData: ([name, c]) => ({ check: name, status: c.status }),
        columns: [
          { title: "Check", cell: ([name]) => name },
          { title: "Status", cell: ([, c]) => badge(c.status) },
          { title: "Details", cell: ([, c]) => checkDetails(c) },
        ],
        rows: Object.entries(health.checks),
      }));

    updated.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}; refreshes every ${REFRESH_MS / 1000} s.`;
  }

  return repeat(root, ctx, REFRESH_MS, refresh).stop;
}
