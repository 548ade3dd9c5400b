"""The README's curl flow, run as written against `commerce serve` on embedded defaults."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import API
from tests.e2e.test_restart import Service

README = Path(__file__).resolve().parents[2] / "README.md"


def try_it_block() -> str:
    section = README.read_text().split("## Try it", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README's 'Try it' section has no bash block"
    return match.group(1)


@pytest.fixture
def service(tmp_path: Path) -> Service:
    (tmp_path / ".commerce").mkdir()
    s = Service(tmp_path / ".commerce", admin_token=None)  # the admin token is generated, as for a new user
    yield s  # type: ignore[misc]
    s.close()


def test_the_readmes_curl_flow_runs_as_written(service: Service, tmp_path: Path) -> None:
    admin = service.start()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "commerce").symlink_to(Path(sys.executable).parent / "commerce")
    env = {**service.env, "B": f"http://127.0.0.1:{service.port}{API}"}
    env.pop("COMMERCE_DATA_DIR")  # the flow reads .commerce/ in its working folder, as a user's does
    done = subprocess.run(["bash", "-e", "-c", try_it_block()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "commerce_orders" in done.stdout
    # The list is the read model, which the projector may not have brought up to the flow's last request yet.
    deadline = time.monotonic() + 30
    while True:
        orders = admin.get(f"{API}/orders", params={"customer_id": "2b1d0a6e-1111-4000-8000-000000000002"}).json()
        if orders["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(orders["items"]) >= 1  # at least the order placed directly
    mug = admin.get(f"{API}/inventory/6f1c1f0e-0000-4000-8000-000000000001").json()
    assert mug["reserved"] + mug["on_hand"] <= 100 and mug["available"] >= 0
    admin.close()
    assert service.stop() == 0
