"""A second Ray node on this machine, joined to a running head, every service on loopback.

Run as a script: ``python second_node.py GCS_ADDRESS NUM_CPUS TEMP_DIR``. It starts a raylet of
its own
(with its object store, workers and agents) the way Ray's multi-node test utility
(``ray.cluster_utils.Cluster.add_node``) does, under a temp dir of its own as a second machine
has (one shared with the head would let each node's runtime-env agent delete the other's job
copies), prints one JSON line (the node id and the pids of
its processes), then waits; SIGTERM stops the node's processes and the script. Two ``ray
start`` on one machine would need Ray's cluster mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``),
which makes every service listen on the machine's address instead of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only; read when ray imports
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    address, cpus, temp_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    params = RayParams(gcs_address=address, num_cpus=cpus, num_gpus=0,
                       object_store_memory=150 * 1024 * 1024, min_worker_port=0,
                       max_worker_port=0, node_manager_port=0, include_log_monitor=False,
                       temp_dir=temp_dir)
    params.dashboard_agent_listen_port = None  # any free port: the head's agent holds its own
    node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
    print(json.dumps({"node_id": node.node_id, "pids": pids}), flush=True)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        time.sleep(0.5)
    node.kill_all_processes(check_alive=False, allow_graceful=False)


if __name__ == "__main__":
    main()
