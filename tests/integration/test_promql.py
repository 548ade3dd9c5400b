"""Every PromQL query of docs/operations.md, and every query of the Grafana dashboard on /metrics, returns data.

A scrape is recorded from the same code /metrics runs (fake actor samples through the Collector, no Ray),
checked with ``promtool check metrics``, and replayed as the input series of a ``promtool test rules``
file: counters and histograms rise from 0 to their scraped value over three hours, gauges stay at theirs,
and every series carries the target labels a real scrape adds (job, instance), so a query that only works
without them fails too. Each query must return at least one series with a number (not NaN) at the end.
Needs Debian's ``prometheus`` package for ``promtool``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_metrics_exposition import DASHBOARD, ROOT, dashboard_exprs, fake_scrape

OPERATIONS = ROOT / "docs" / "operations.md"
TARGET = {"job": "commerce", "instance": "commerce:8084"}
STEPS = 180  # one sample a minute for three hours
RATE_INTERVAL = "5m"  # Grafana's $__rate_interval


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (apt-get install prometheus); "
                    "these tests check the PromQL of docs/operations.md and docs/grafana-dashboard.json with it")
    return found


def doc_queries() -> list[tuple[str, str]]:
    """(name, query) of every ```promql block of docs/operations.md: a `#` line names the queries after it."""
    queries = []
    for block in re.findall(r"^```promql\n(.*?)^```", OPERATIONS.read_text(), re.M | re.S):
        name = ""
        for line in block.splitlines():
            if line.startswith("#"):
                name = line.lstrip("# ").strip()
            elif line.strip():
                queries.append((name, line.strip()))
    return queries


def input_series(exposition: str) -> list[dict[str, str]]:
    """The scrape as promtool input series, with the target labels a real scrape adds."""
    series = []
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            labels = ",".join(f'{k}={json.dumps(v)}' for k, v in sorted({**s.labels, **TARGET}.items()))
            assert math.isfinite(s.value), s
            rising = family.type in ("counter", "histogram")
            values = f"0+{s.value / STEPS!r}x{STEPS}" if rising else f"{s.value!r}+0x{STEPS}"
            series.append({"series": f"{s.name}{{{labels}}}", "values": values})
    return series


def run_queries(promtool: str, tmp_path: Path, exposition: str, queries: list[tuple[str, str]]) -> None:
    """Each query returns at least one series whose value is a number, at the end of the recorded span."""
    tests = [{
        "interval": "1m",
        "input_series": input_series(exposition),
        "promql_expr_test": [
            # count(q == q): the series of q that are numbers (NaN is not equal to itself); none gives no result
            {"expr": f"count(({q}) == ({q})) > bool 0", "eval_time": f"{STEPS}m",
             "exp_samples": [{"labels": "{}", "value": 1}]}
            for _, q in queries],
    }]
    spec = tmp_path / "queries_test.yml"
    spec.write_text(json.dumps({"rule_files": [], "evaluation_interval": "1m", "tests": tests}, indent=1))  # JSON is YAML
    done = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    listed = "\n".join(f"  {name}: {q}" for name, q in queries)
    assert done.returncode == 0, (f"a query returns no data (or NaN) from a scrape of /metrics:\n{done.stdout}\n"
                                  f"{done.stderr}\nqueries:\n{listed}")


async def test_the_exposition_passes_promtool_check_metrics(promtool: str, tmp_path: Path) -> None:
    scrape = tmp_path / "metrics.txt"
    scrape.write_text((await fake_scrape()).text)
    with scrape.open() as stdin:
        done = subprocess.run([promtool, "check", "metrics"], stdin=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_docs_list_the_four_kpis() -> None:
    names = [name for name, _ in doc_queries()]
    for kpi in ("orders per hour", "cart abandonment rate", "inventory turnover", "saga success rate"):
        assert any(n.startswith(kpi) for n in names), f"docs/operations.md has no promql query named {kpi!r}"


async def test_every_query_of_the_docs_returns_data(promtool: str, tmp_path: Path) -> None:
    queries = doc_queries()
    assert queries, f"no ```promql block in {OPERATIONS}"
    run_queries(promtool, tmp_path, (await fake_scrape()).text, queries)


async def test_every_commerce_query_of_the_dashboard_returns_data(promtool: str, tmp_path: Path) -> None:
    """Ray Serve's panels query Ray's own metrics export, not /metrics (their names are checked in the unit tests)."""
    exprs = [e for e in dashboard_exprs() if "ray_" not in e]
    assert exprs, f"no query of /metrics in {DASHBOARD}"
    queries = [(f"dashboard #{i}", e.replace("$__rate_interval", RATE_INTERVAL)) for i, e in enumerate(exprs)]
    run_queries(promtool, tmp_path, (await fake_scrape()).text, queries)
