"""A Ray cluster of a head and worker nodes on this machine, run in a process of its own so that the test
process stays connected to the session's Ray: ``python -m tests.cluster.host WORKERS``.

It prints one JSON line with the cluster's address and its nodes, then takes commands on stdin, one per
line, answering each with a JSON line: ``remove N`` (remove worker node N, as a machine lost would be),
``actors`` (every actor: class, state, node) and ``quit`` (stop every node). It stops the cluster too when stdin closes.
"""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster


def main() -> None:
    workers = int(sys.argv[1])
    # Each node has one CPU; the service's actors and replicas reserve a tenth of one each.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(workers)]
    cluster.wait_for_nodes()
    try:
        print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                          "workers": [n.node_id for n in nodes]}), flush=True)
        for line in sys.stdin:
            command, *arg = line.split()
            if command == "remove":
                node = nodes[int(arg[0])]
                cluster.remove_node(node, allow_graceful=False)
                print(json.dumps({"removed": node.node_id}), flush=True)
            elif command == "actors":  # every actor the cluster knows: class, state and node
                table = cluster.global_state.actor_table(None)
                print(json.dumps([{"class_name": a.get("ActorClassName", ""), "state": a.get("State"),
                                   "name": a.get("Name", ""), "node_id": (a.get("Address") or {}).get("NodeID")}
                                  for a in table.values()]), flush=True)
            elif command == "quit":
                break
    finally:
        cluster.shutdown()
        print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
