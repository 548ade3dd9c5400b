"""The layers keep their shape: domain/ imports the standard library, itself and rpds's immutable maps only; a saga step is named
by its enum, never by a string, where sagas are decided, driven and stored; the ingress and the actors
stay small enough to read; the actors' modules do not load redis-py."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "domain"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_imports_only_the_standard_library_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"domain", "__future__", "rpds"}  # rpds: values, no I/O
    for path in DOMAIN.glob("*.py"):
        assert imported_roots(path) <= allowed, path.name


def test_no_step_is_named_by_a_string_outside_its_enum() -> None:
    from domain.saga import Step

    names = {step.value for step in Step}
    places = [*DOMAIN.glob("*.py"), *(ROOT / "store").glob("*.py"), *(ROOT / "actors").glob("saga_*.py"),
              ROOT / "actors" / "order_shard.py", ROOT / "actors" / "orders.py"]
    for path in places:
        if path.name == "saga.py" and path.parent == DOMAIN:
            continue  # the enum itself
        literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not literals & names, (path.name, literals & names)


def test_the_ingress_and_the_actors_stay_small() -> None:
    assert len((ROOT / "serve_app.py").read_text().splitlines()) < 200
    for path in (ROOT / "actors").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 250, path.name


def test_the_actors_modules_do_not_load_redis() -> None:
    """Only the ingress talks to Redis. redis-py and what it pulls in (OpenTelemetry's SDK) cost each shard and
    the projector about 70 ms of CPU at every start and 7.5 MiB of memory (docs/benchmarks.md, twenty-first
    round). What they load at run time is checked on the running actors (tests/e2e/test_actor_processes.py)."""
    code = ("import sys, actors, actors.order_shard, actors.inventory_shard, actors.projector; "
            "print(actors.__file__); print(sorted({m.split('.')[0] for m in sys.modules} & {'redis', 'opentelemetry'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where, loaded = out.stdout.strip().splitlines()[-2:]
    assert Path(where).is_relative_to(ROOT)  # this checkout's modules, not an installed copy
    assert loaded == "[]"
