"""Helpers of the benchmarks: a fresh database on the configured PostgreSQL, percentiles, output."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def dsn() -> str:
    return os.environ.get("COMMERCE_DATABASE_URL", DEFAULT_DSN)


def redis_url() -> str:
    return os.environ.get("COMMERCE_REDIS_URL", DEFAULT_REDIS)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(latencies: Sequence[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (f"p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms  "
            f"p99 {percentile(ms, 99):7.1f} ms  mean {statistics.fmean(ms) if ms else 0:7.1f} ms")


def row(label: str, count: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<48} {count:>7} in {seconds:6.2f} s = {count / seconds:9.1f}/s  {extra}", flush=True)
