// Saga detail: summary, next retry, a timeline in execute and compensate lanes, the order's events
// beside it, and the Retry and Compensate actions where API.md allows them.

import { ApiError, getJSON, post } from "./api.js";
import { badge, el, fields, replace, seconds, table, text, time, token } from "./render.js";

const CAN_RETRY = new Set(["FAILED"]);
const CAN_COMPENSATE = new Set(["RUNNING", "FAILED", "COMPLETED"]);
const MOVING = new Set(["RUNNING", "COMPENSATING"]);

function duration(ms) {
  return ms === null ? "—" : `+${seconds(ms / 1000)}`;
}

function timeline(saga) {
  let previous = Date.parse(saga.created_at);
  const rows = (saga.steps || []).map((s, i) => {
    const at = Date.parse(s.at);
    const gap = Number.isFinite(previous) && Number.isFinite(at) ? at - previous : null;
    previous = at;
    const card = el("div", {
      class: `step outcome-${token(s.outcome)}`, testid: "step",
      dataset: { step: s.step, action: s.action, outcome: s.outcome, attempt: s.attempt },
    },
    el("strong", {}, text(s.step)), " ", el("span", { class: "muted" }, `attempt ${text(s.attempt)}`), " ", badge(s.outcome),
    s.error ? el("div", { class: "error-text", testid: "step-error" }, s.error) : null);
    return el("tr", {},
      el("td", { class: "muted" }, String(i + 1)),
      el("td", {}, time(s.at, true)),
      el("td", { title: "time since the previous record" }, duration(gap)),
      el("td", { class: "lane" }, s.action === "execute" ? card : null),
      el("td", { class: "lane" }, s.action === "compensate" ? card : null));
  });
  return el("table", { class: "timeline", testid: "timeline" },
    el("thead", {}, el("tr", {}, ["#", "At", "Duration", "Execute", "Compensate"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No step recorded yet."))));
}

export function render(root, ctx) {
  const sagaId = ctx.match[1];
  const path = `/api/v1/admin/sagas/${encodeURIComponent(sagaId)}`;
  root.dataset.testid = "saga";
  root.dataset.sagaId = sagaId;
  const summary = el("div", {}, "Loading…");
  const steps = el("div");
  const orderEvents = el("div");
  const reason = el("input", { id: "action-reason", testid: "action-reason", placeholder: "why (required)", size: 50, maxlength: 500 });
  const retry = el("button", { type: "button", id: "retry-button", testid: "retry-button", hidden: true }, "Retry from the failed step");
  const compensate = el("button", { type: "button", id: "compensate-button", testid: "compensate-button", hidden: true, class: "danger" }, "Compensate");
  const outcome = el("p", { id: "action-result", testid: "action-result", role: "status" });
  const reasonLabel = el("label", {}, "Reason ", reason);
  const actions = el("section", { class: "panel", testid: "saga-actions", hidden: true },
    el("h3", {}, "Operator action"), reasonLabel, " ", retry, " ", compensate, outcome);
  replace(root,
    el("h2", {}, "Saga ", el("span", { class: "mono" }, sagaId)),
    el("section", { class: "panel" }, summary),
    actions,
    el("div", { class: "columns" },
      el("section", { class: "panel" }, el("h3", {}, "Timeline"), steps),
      el("section", { class: "panel" }, el("h3", {}, "Order events"), orderEvents)));

  let timer = null;
  let stopped = false;
  let busy = false;
  let status = null;
  let ticket = 0; // only the latest refresh renders and schedules the next one
  let shown = null; // the saga as last drawn

  async function refresh() {
    clearTimeout(timer);
    const mine = ++ticket;
    try {
      const saga = await getJSON(path);
      if (stopped || mine !== ticket) return;
      status = saga.status;
      const seen = JSON.stringify(saga);
      if (seen !== shown) await show(saga);
      shown = seen;
      if (stopped || mine !== ticket) return;
      root.dataset.state = "ready";
      ctx.clearError();
    } catch (error) {
      if (stopped || mine !== ticket) return;
      root.dataset.state = "error";
      shown = null; // drawn again in full once the saga can be read
      replace(summary, el("p", { class: "error-text", testid: "saga-error" }, error.message));
      ctx.fail(error);
    } finally {
      if (!stopped && mine === ticket && !document.hidden) {
        timer = setTimeout(refresh, MOVING.has(status) || busy ? 1000 : 3000);
      }
    }
  }

  function visible() { // no refresh while the tab is hidden; one at once when it is shown again
    if (!document.hidden && !stopped) refresh();
  }

  // Draws the saga (only when it changed, so that nothing moves under the operator's eyes) and its order's events.
  async function show(saga) {
    root.dataset.status = saga.status;
    replace(summary, fields([
      ["Status", badge(saga.status, "saga-status-badge")],
      ["Type", saga.saga_type],
      ["Order", saga.order_id, "saga-order-id"],
      ["Current step", saga.current_step, "saga-current-step"],
      ["Attempts", saga.attempts],
      ["Reason", saga.reason, "saga-reason"],
      ["Next retry", saga.next_attempt_at ? time(saga.next_attempt_at) : "none waiting", "next-attempt"],
      ["Created", time(saga.created_at)],
      ["Updated", time(saga.updated_at)],
    ], "saga-summary"));
    replace(steps, timeline(saga));
    retry.hidden = !CAN_RETRY.has(saga.status);
    compensate.hidden = !CAN_COMPENSATE.has(saga.status);
    reasonLabel.hidden = retry.hidden && compensate.hidden;
    actions.hidden = reasonLabel.hidden && !outcome.textContent;
    await loadEvents(saga.order_id);
  }

  async function loadEvents(orderId) {
    try {
      const answer = await getJSON(`/api/v1/orders/${encodeURIComponent(orderId)}/events`);
      if (stopped) return;
      replace(orderEvents, table({
        testid: "order-events", rowTestid: "order-event", rowData: (e) => ({ eventType: e.event_type, version: e.version }),
        empty: "The order has no events.",
        columns: [
          { title: "v", cell: (e) => e.version },
          { title: "Event", cell: (e) => e.event_type },
          { title: "At", cell: (e) => time(e.created_at) },
          { title: "Data", cell: (e) => el("code", { class: "data" }, text(e.data)) },
        ],
        rows: answer.items,
      }));
    } catch (error) {
      if (stopped) return;
      if (error instanceof ApiError && error.status === 401) throw error;
      replace(orderEvents, el("p", { class: "error-text", testid: "order-events-error" }, error.message));
    }
  }

  async function act(kind) {
    const why = reason.value.trim();
    if (!why) {
      outcome.className = "error-text";
      outcome.textContent = "Enter a reason first.";
      reason.focus();
      return;
    }
    if (kind === "compensate" && !window.confirm("Compensate this saga? Its shipment is cancelled, its payment "
      + "refunded and its stock put back; this cannot be undone.")) {
      outcome.className = "muted";
      outcome.dataset.outcome = "not-sent";
      outcome.textContent = "Compensation not requested.";
      return;
    }
    busy = true;
    retry.disabled = compensate.disabled = true;
    outcome.className = "muted";
    outcome.textContent = `${kind === "retry" ? "Retry" : "Compensation"} requested…`;
    try {
      // retry takes no body (API.md); compensate records the reason
      const answer = kind === "retry" ? await post(`${path}/retry`) : await post(`${path}/compensate`, { reason: why });
      if (stopped) return;
      outcome.className = "ok-text";
      outcome.dataset.outcome = "accepted";
      outcome.textContent = `${kind === "retry" ? "Retry" : "Compensation"} accepted (${answer.status}, saga `
        + `${text(answer.body && answer.body.status)} when accepted); reason: ${why}`
        + (kind === "retry" ? " (noted here only: a retry takes no body)" : "");
      reason.value = "";
    } catch (error) {
      if (stopped) return;
      if (error instanceof ApiError && error.status === 401) {
        ctx.fail(error);
        return;
      }
      outcome.className = "error-text";
      outcome.dataset.outcome = "refused";
      outcome.textContent = `${kind === "retry" ? "Retry" : "Compensation"} refused: ${error.message}`;
    } finally {
      retry.disabled = compensate.disabled = false;
      if (!stopped) await refresh();
      busy = false;
    }
  }

  retry.addEventListener("click", () => act("retry"));
  compensate.addEventListener("click", () => act("compensate"));
  document.addEventListener("visibilitychange", visible);
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
  };
}
