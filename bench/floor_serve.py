"""The floor's ``commerce serve`` (``bench/ray_floor.py`` runs it): Ray started as the service starts it, then
the idle actors and Serve with the floor's ingress, in the order and with the options of the service's own
start, and nothing of the service. Its settings come from the environment and the YAML file as the service's
do (``load_settings``), so that both run the same layout. It stops as ``commerce serve`` does: a signal while
it starts unwinds into the stop, one after it is up ends the wait; everything it started is stopped by process
id (``Runtime.stop``), and it ends with ``os._exit``. It also stops when the process that started it
(PARENT_PID) is gone, and gives up on a start whose actors have not answered within ``START_TIMEOUT``.

    python -m bench.floor_serve PORT DASHBOARD_PORT PHASES_FILE PARENT_PID

Writes to PHASES_FILE, as JSON once every actor has answered, the seconds after its start at which each part
of the start was done.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path


def main(port: int, dashboard_port: int, phases_file: Path, parent: int) -> int:
    started = time.monotonic()
    import ray
    from ray import serve

    from actors.deploy import START_TIMEOUT, actor_options
    from bench.floor_ingress import APP_NAME, ROUTE_PREFIX, FloorIngress
    from bench.idle import IdleActor
    from commerce.cli import _on_signals, _stop_now
    from commerce.runtime import Runtime
    from commerce.settings import load_settings

    phases = {"imports": time.monotonic() - started}
    settings = load_settings().replace(port=port, dashboard_port=dashboard_port,
                                       namespace=f"floor-{uuid.uuid4().hex[:6]}")
    runtime = Runtime(settings)
    stop = threading.Event()
    code = 1
    _on_signals(_stop_now)  # a stop while starting unwinds into the stop below
    try:
        runtime.start_ray()
        _on_signals(_stop_now)  # Ray installs its own SIGTERM handling in the driver; ours comes after it
        phases["ray.init"] = time.monotonic() - started
        names = [f"floor-{i}" for i in range(settings.order_shards + settings.inventory_shards + 1)]  # the projector's
        idle = [ray.remote(IdleActor).options(**actor_options(name, settings.namespace, settings.shard_cpus)).remote()
                for name in names]
        serve.start(http_options={"host": settings.host, "port": port}, proxy_location=settings.proxy_location)
        phases["serve.start"] = time.monotonic() - started
        # The service's replicas: autoscaled ones (max_replicas) start as ``replicas`` of them too.
        ingress = FloorIngress.options(ray_actor_options={"num_cpus": settings.replica_cpus},
                                       num_replicas=settings.replicas)
        serve.run(ingress.bind(names, settings.namespace), name=APP_NAME, route_prefix=ROUTE_PREFIX)
        phases["serve.run"] = time.monotonic() - started
        ray.get([a.ping.remote() for a in idle], timeout=START_TIMEOUT)
        phases["actors answered"] = time.monotonic() - started
        phases_file.write_text(json.dumps(phases))
        _on_signals(lambda *_: (_on_signals(signal.SIG_IGN), stop.set()))
        while not stop.wait(1.0):
            if os.getppid() != parent:  # whoever started it is gone without stopping it
                break
        code = 0
    except KeyboardInterrupt:  # the stop while starting (commerce.cli's _Stop), or what ray.get made of it
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        _on_signals(signal.SIG_IGN)  # signals repeated while stopping must not cut the stop short
        runtime.stop()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
