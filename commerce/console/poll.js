// A page's refresh loop: one round now, the next `everyMs` after each round ends, until the page is left.
// A round that succeeds marks the page ready and clears the error; one that fails shows its error. After
// `stop()` (the page's cleanup) no round starts, and a late answer changes nothing.

export function repeat(root, ctx, everyMs, work, { paused = () => false } = {}) {
  let timer = null;
  let stopped = false;
  const isStopped = () => stopped;

  async function round() {
    clearTimeout(timer);
    if (stopped || paused()) return;
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
      if (!stopped && !paused()) timer = setTimeout(round, everyMs);
    }
  }

  round();
  return {
    again: round,
    stopped: isStopped,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
