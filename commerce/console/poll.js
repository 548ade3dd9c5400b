// A page's refresh loop: one round now, the next `everyMs` after each round ends, until the page is left.
// A round that succeeds marks the page ready and clears the error; one that fails shows its error. After
// `stop()` (the page's cleanup) no round starts, and a late answer changes nothing. While the browser tab
// is hidden no round starts (an overview left open in a background tab would ask for /health and /metrics
// for ever); one starts as soon as it is shown again. `again()` during a round runs one more right after.

export function repeat(root, ctx, everyMs, work, { paused = () => false } = {}) {
  let timer = null;
  let stopped = false;
  let running = false;
  let wanted = false; // asked for while a round ran
  const isStopped = () => stopped;
  const waiting = () => stopped || paused() || document.hidden;

  async function round() {
    clearTimeout(timer);
    if (running) {
      wanted = true;
      return;
    }
    if (waiting()) return;
    running = true;
    wanted = false;
    try {
      await work(isStopped);
      if (stopped) return;
      root.dataset.state = "ready";
      ctx.clearError();
    } catch (error) {
      if (stopped) return;
      root.dataset.state = "error";
      ctx.fail(error);
    } finally {
      running = false;
      if (!waiting()) timer = setTimeout(round, wanted ? 0 : everyMs);
    }
  }

  function shown() {
    if (!document.hidden) round();
  }

  document.addEventListener("visibilitychange", shown);
  round();
  return {
    again: round,
    stopped: isStopped,
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", shown);
    },
  };
}
