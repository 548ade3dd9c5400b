"""How often Python's cyclic garbage collector runs in the service's busy processes: its actors and its Serve
replicas.

Python collects its youngest generation once 700 more container objects were made than freed: in an actor
under load, where every call and step makes tasks, futures, frames and dicts, that is hundreds of
collections a second, each walking every young object still alive (the calls and sagas under way), and
every tenth of them a middle one. Nearly all of those objects are freed by their reference counts anyway;
the collector is only needed for the cycles among them. With the young threshold at 100,000, an order cost
a fifth to a quarter less CPU in alternating runs (docs/benchmarks.md, fifteenth round). The cycles wait
longer for their collection: at most about that many objects' worth, whatever the load, so memory stays
flat. Ray Serve's proxy tunes its own process the same way (``RAY_SERVE_PROXY_GC_THRESHOLD``).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # container objects made (net of those freed) before a young collection


def tune() -> None:
    """Collect the young generation less often in this process; the older generations keep their thresholds."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
