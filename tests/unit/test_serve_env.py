"""What Serve's processes are started with: the high-throughput mode always, the controller's loop interval
unless the operator set one."""

from __future__ import annotations

import pytest

from commerce.runtime import serve_env


def test_serve_runs_its_control_loop_every_half_second_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", raising=False)
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    env = serve_env()
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.5"
    assert (env["RAY_SERVE_ENABLE_HA_PROXY"], env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]) == ("1", "1")
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1")
    assert serve_env()["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1"
