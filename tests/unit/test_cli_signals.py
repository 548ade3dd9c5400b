"""A stop asked for by a signal while a tool's asyncio loop runs (a migration, a rebuild) ends the run: it is not
dropped by asyncio as an error of one callback, which would let the run go on and leave every later signal
ignored."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from commerce import cli


def test_a_signal_during_an_event_loop_callback_stops_the_run() -> None:
    before = {sig: signal.getsignal(sig) for sig in cli.SIGNALS}
    went_on = []

    async def tool() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)  # arrives while a callback runs, as a Ctrl-C may
        await asyncio.sleep(0.5)
        went_on.append(True)

    cli._on_signals(cli._stop_now)
    try:
        with pytest.raises(cli._Stop):
            asyncio.run(tool())
        assert went_on == []
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
