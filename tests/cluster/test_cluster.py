"""The service on a Ray cluster of three nodes, joined as an operator joins it (``commerce serve
--address``): shards and replicas spread over the nodes, a node lost under load loses nothing and
oversells nothing, and stopping the service leaves the cluster's other applications running."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.cluster.conftest import ADMIN, ADMIN_TOKEN, Cluster, JoinedService, clean_environment
from tests.e2e.helpers import ADDRESS, API, confirmed_order
from tests.integration.ray_support import TEST_JWT_SECRET, eventually
from tests.support import Servers, create_database, drop_database

STOCK = 30
CONFIG = Path(__file__).parents[2] / "deploy" / "serve-config.yaml"


class RetryingReads(httpx.AsyncHTTPTransport):
    """Sends an idempotent request again when the server closed a kept-alive connection under it, as HTTP
    clients may (RFC 9110, 9.2.2): Serve reloads its HAProxy when a replica moves, and the old process
    closes its idle connections. A POST is sent again by its caller, with its Idempotency-Key."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(3):
            try:
                return await super().handle_async_request(request)
            except httpx.RemoteProtocolError:
                if request.method not in ("GET", "HEAD", "PUT", "DELETE") or attempt == 2:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture
async def http(joined: JoinedService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=joined.base, timeout=60, headers=ADMIN, transport=RetryingReads()) as client:
        yield client


async def placement(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get(f"{API}/admin/actors")
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def test_shards_and_replicas_spread_over_the_nodes(cluster: Cluster, http: httpx.AsyncClient) -> None:
    actors = await placement(http)
    assert Counter(a["kind"] for a in actors) == {"order": 3, "inventory": 3, "projector": 1}
    nodes = {a["node_id"] for a in actors}  # SPREAD is Ray's best effort: on two nodes at least
    assert len(nodes) >= 2 and nodes <= {cluster.head, *cluster.workers}
    replicas = cluster.actors("CommerceIngress")
    assert len(replicas) == 2 and len({r["node_id"] for r in replicas}) == 2


async def test_a_second_instance_on_the_same_cluster_is_refused_and_changes_nothing(
        cluster: Cluster, joined: JoinedService, http: httpx.AsyncClient) -> None:
    before = await placement(http)
    second = JoinedService(cluster, joined.env["COMMERCE_DATABASE_URL"], joined.env["COMMERCE_REDIS_URL"],
                           joined.log.parent / "second.log", COMMERCE_NAMESPACE=joined.env["COMMERCE_NAMESPACE"])
    assert await asyncio.to_thread(second.proc.wait, 180) == 2  # a configuration error
    assert "already runs on this cluster" in second.log.read_text()
    after = await placement(http)  # the first instance's actors are the same, and it still answers
    assert sorted(a["actor_id"] for a in after) == sorted(a["actor_id"] for a in before)


async def place_until_accepted(http: httpx.AsyncClient, body: dict[str, Any], seen: Counter[str]) -> dict[str, Any]:
    """Place an order as a careful client does: one Idempotency-Key, sent again after a 503, a lost
    connection, the ingress's own 500 for a replica lost with the request (Serve's HAProxy answers a plain
    "Internal Server Error" for a 502, 503 or 504: no problem+json, the outcome unknown, as for a lost
    connection), or a 409 request-in-progress (the key is held by an attempt lost with its node, until
    its claim, no longer renewed, goes stale after 15 s), until the service answers."""
    key = str(uuid.uuid4())
    deadline = asyncio.get_running_loop().time() + 240
    while asyncio.get_running_loop().time() < deadline:
        try:
            r = await http.post(f"{API}/orders", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError as e:
            seen[type(e).__name__] += 1
            await asyncio.sleep(0.5)
            continue
        problem = r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/problem+json")
        kind = r.json().get("type", "").rpartition("/")[2] if problem else r.text[:80] if r.status_code >= 400 else ""
        seen[f"{r.status_code} {kind}".strip()] += 1
        if r.status_code == 202:
            return {**r.json(), "lines": body["items"]}
        lost_by_the_ingress = r.status_code == 500 and not problem and r.text == "Internal Server Error"
        assert r.status_code == 503 or lost_by_the_ingress or kind == "request-in-progress", r.text
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    raise AssertionError(f"order never accepted: {seen}")


async def running_sagas(service: JoinedService) -> int:
    conn = await asyncpg.connect(service.env["COMMERCE_DATABASE_URL"])
    try:
        return int(await conn.fetchval("SELECT COUNT(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED')"))
    finally:
        await conn.close()


async def test_a_node_lost_under_load_loses_no_order_and_oversells_nothing(
        cluster: Cluster, joined: JoinedService, http: httpx.AsyncClient) -> None:
    before = await placement(http)
    replicas = {r["node_id"] for r in cluster.actors("CommerceIngress")}

    def weight(worker: int) -> tuple[bool, int]:  # a node with a replica and the most shards
        node = cluster.workers[worker]
        return node in replicas, sum(a["node_id"] == node and a["kind"] != "projector" for a in before)

    doomed = max(range(len(cluster.workers)), key=weight)
    kept = cluster.workers[1 - doomed]
    assert weight(doomed)[1] >= 1  # the node holds shards: losing it matters
    rng = random.Random(11)
    skus = []
    for _ in range(3):
        pid = str(uuid.uuid4())
        r = await http.put(f"{API}/inventory/{pid}", json={"on_hand": STOCK, "price": "2.00"})
        assert r.status_code == 200, r.text
        skus.append(pid)
    # A few cards answer after 30 s: those sagas are certainly in flight when the node goes.
    bodies = [{"customer_id": str(uuid.uuid4()),
               "payment_token": rng.choice(["tok_visa"] * 4 + ["tok_flaky"]) if k % 10 else "tok_slow",
               "items": [{"product_id": pid, "quantity": rng.randint(1, 3)} for pid in rng.sample(skus, 2)],
               "shipping_address": ADDRESS} for k in range(60)]
    seen: Counter[str] = Counter()
    accepted: list[dict[str, Any]] = []
    queue = list(bodies)

    async def client() -> None:
        while queue:
            accepted.append(await place_until_accepted(http, queue.pop(), seen))

    at_removal: list[int] = []
    in_flight: list[int] = []

    async def lose_the_node() -> None:
        await eventually(lambda: asyncio.sleep(0, len(accepted)), lambda n: n >= 15, timeout=120, interval=0.1)
        at_removal.append(len(accepted))
        in_flight.append(await running_sagas(joined))
        await asyncio.to_thread(cluster.remove, doomed)

    await asyncio.gather(lose_the_node(), *(client() for _ in range(8)))
    assert len(accepted) == len(bodies), seen
    assert at_removal[0] < len(bodies) and in_flight[0] > 0  # orders came in and sagas ran when the node went

    async def statuses() -> list[str]:
        # While the proxy still lists the lost node's replica, a read may get the proxy's own plain-text
        # error: polled again, as a client polls.
        got = await asyncio.gather(*[http.get(f"{API}/orders/{o['order_id']}") for o in accepted])
        return [g.json()["status"] if g.status_code == 200 else str(g.status_code) for g in got]

    final = await eventually(statuses, lambda s: set(s) <= {"CONFIRMED", "CANCELLED"}, timeout=300, interval=1.0)
    confirmed = [o for o, s in zip(accepted, final, strict=True) if s == "CONFIRMED"]
    assert confirmed  # 60 orders of up to 6 units over 90: some are confirmed, the rest find no stock
    sold: Counter[str] = Counter()
    for o in confirmed:
        for line in o["lines"]:
            sold[line["product_id"]] += line["quantity"]
    for pid in skus:
        stock = (await http.get(f"{API}/inventory/{pid}")).json()
        assert (stock["on_hand"], stock["reserved"]) == (STOCK - sold[pid], 0), pid

    conn = await asyncpg.connect(joined.env["COMMERCE_DATABASE_URL"])
    try:
        unfinished = await conn.fetchval(
            "SELECT COUNT(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED')")
        charges = await conn.fetch(
            """SELECT s.order_id, COUNT(*) AS n FROM sagas s
               JOIN provider_ledger l ON l.provider = 'payments' AND l.operation = 'charge'
                                     AND l.status = 'succeeded' AND l.key LIKE s.saga_id::text || ':%'
               GROUP BY s.order_id""")
    finally:
        await conn.close()
    assert unfinished == 0
    assert {str(r["order_id"]): r["n"] for r in charges} == {o["order_id"]: 1 for o in confirmed}

    after = await placement(http)  # the lost node's shards live on the nodes that remain
    assert len(after) == len(before) and {a["node_id"] for a in after} <= {cluster.head, kept}
    replaced = await eventually(lambda: asyncio.to_thread(cluster.actors, "CommerceIngress"),
                                lambda r: len(r) == 2, timeout=120, interval=1.0)  # Serve replaced its replica
    assert {r["node_id"] for r in replaced} <= {cluster.head, kept}


async def test_stopping_the_service_leaves_the_clusters_other_applications_running(
        cluster: Cluster, joined: JoinedService) -> None:
    deployed = subprocess.run([sys.executable, "-m", "tests.cluster.other_app", cluster.address],
                              capture_output=True, text=True, timeout=180, env=clean_environment(**cluster.env))
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    async with httpx.AsyncClient(base_url=joined.base, timeout=30, transport=RetryingReads()) as http:
        other = await eventually(lambda: http.get("/other"), lambda r: r.status_code == 200, timeout=60)
        assert other.text == "other"

        assert await asyncio.to_thread(joined.stop, signal.SIGTERM) == 0
        assert "commerce: stopped" in joined.log.read_text()
        gone = await eventually(
            lambda: asyncio.to_thread(lambda: [a["class_name"] for a in cluster.actors("")]),
            lambda names: not any(k in n for n in names for k in ("OrderShard", "InventoryShard", "CommerceIngress")),
            timeout=30, interval=0.5)
        assert any("Other" in n for n in gone)  # the other team's replica lives on
        still = await eventually(lambda: http.get("/other"), lambda r: r.status_code == 200, timeout=30)
        assert still.text == "other"
        assert (await http.get(f"{API}/catalog")).status_code == 404  # this application is gone


async def test_the_example_serve_config_deploys_the_service_on_the_cluster(
        cluster: Cluster, joined: JoinedService, servers: Servers, tmp_path: Path) -> None:
    """``serve run deploy/serve-config.yaml --non-blocking``, the config's way (its builder runs in
    Serve's build task on the cluster, with the config's runtime_env), after the stop above: this
    machine's servers and secrets in the environment, counts and CPU reservations for a small machine."""
    config = yaml.safe_load(CONFIG.read_text())
    app = config["applications"][0]
    dsn = await create_database(servers.database_url, "commerce_config")
    namespace = f"config-{uuid.uuid4().hex[:6]}"
    app["runtime_env"]["env_vars"].update(
        COMMERCE_DATABASE_URL=dsn, COMMERCE_REDIS_URL=servers.redis_url, COMMERCE_ADMIN_TOKEN=ADMIN_TOKEN,
        COMMERCE_SERVER_SECRET="cluster-config-secret-0123456789", COMMERCE_JWT_SECRET=TEST_JWT_SECRET,
        COMMERCE_NAMESPACE=namespace)
    app["args"].update(replicas=1, max_replicas=2, order_shards=1, inventory_shards=1, shard_cpus=0.05,
                       replica_cpus=0.05)
    app.update(name="commerce-config", route_prefix="/config")  # beside whatever else runs on the cluster
    path = tmp_path / "serve-config.yaml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    env = clean_environment(**cluster.env)
    serve_cli = str(Path(sys.executable).parent / "serve")
    try:
        deployed = await asyncio.to_thread(
            subprocess.run, [serve_cli, "run", str(path), "--address", cluster.address, "--non-blocking"],
            capture_output=True, text=True, timeout=300, env=env)
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        async with httpx.AsyncClient(base_url=f"{joined.base}/config", timeout=60, headers=ADMIN,
                                     transport=RetryingReads()) as http:
            await eventually(lambda: http.get("/health"), lambda r: r.status_code == 200, timeout=180, interval=1.0)
            await confirmed_order(http, on_hand=2, quantity=2)
            kinds = Counter(a["kind"] for a in await placement(http))
            assert kinds == {"order": 1, "inventory": 1, "projector": 1}  # the args given, not the file's 4 + 4
    finally:
        removed = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", REMOVE], capture_output=True,
                                          text=True, timeout=180, env={**env, "COMMERCE_NAMESPACE": namespace,
                                                                       "RAY_ADDRESS": cluster.address,
                                                                       "APP": app["name"]})
        assert removed.returncode == 0, removed.stderr[-2000:]
        await drop_database(servers.database_url, dsn)


# What an operator runs to take the deployment down: the application, then its detached actors.
REMOVE = """
import os
import ray
from ray import serve
from actors.deploy import remove_actors
from commerce.settings import load_settings
ray.init()
serve.delete(os.environ["APP"])
remove_actors(load_settings())
"""
