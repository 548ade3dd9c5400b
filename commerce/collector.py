"""How often Python's cyclic garbage collector runs in the service's busy processes: its actors and its Serve
replicas.

Python collects its youngest generation once 700 more container objects were made than freed: in an actor
under load, where every call and step makes tasks, futures, frames and dicts, that is dozens of
collections a second, each walking every young object still alive (the calls and sagas under way), and
every tenth of them a middle one. Nearly all of those objects are freed by their reference counts anyway;
the collector is only needed for the cycles among them. With the young threshold at 100,000, an order cost
about a sixth less CPU in alternating runs (docs/benchmarks.md, fifteenth round). The cycles wait
longer for their collection: at most about that many container objects more, whatever the load (the RSS of
20,000 orders through one shard grew 4 % from its first tenth to its end in that round). Ray Serve's proxy
has a setting for the same threshold in its own process (``RAY_SERVE_PROXY_GC_THRESHOLD``).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # container objects made (net of those freed) before a young collection


def tune() -> None:
    """Collect the young generation less often in this process; the older generations keep their thresholds."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
