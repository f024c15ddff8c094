"""Where a sweep records and how it reaches Ray: resources and places, never identity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from gatelab.runners.run.numerics import Numerics, resolve_numerics
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.sweep.spec import RunResources


@dataclass
class SweepContext:
    tracking_uri: str | None
    """Resolved on construction (``gatelab.contract.resolve_tracking_uri``)."""
    experiment: str = "gatelab"
    work_dir: Path = field(default_factory=lambda: Path(".gatelab").resolve())
    address: str | None = None
    """A Ray cluster to join; ``None``: ``$RAY_ADDRESS``, else a local Ray started here."""
    retry_failed: bool = False
    sweeps_file: Path | None = None
    """``None``: ``gatelab.shipped.sweeps_file()``."""
    client: MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        self.client, self.tracking_uri = RunTracker.client_for(self.tracking_uri)

    @property
    def uri(self) -> str:
        assert self.tracking_uri is not None
        return self.tracking_uri

    @property
    def joins_cluster(self) -> bool:
        return (self.address or os.environ.get("RAY_ADDRESS")) is not None

    def numerics(self, resources: RunResources) -> Numerics:
        """The numerics every run of the sweep trains with: CUDA (bf16, auto kernel) where the
        cluster has GPUs and the sweep asks for them, else CPU (fp32, SDPA). Decided by the
        driver, so that the plan's hashes are the ones the workers record."""
        return resolve_numerics("cuda" if self.has_gpus() and resources.gpus > 0 else "cpu")

    def has_gpus(self) -> bool:
        if not self.joins_cluster:
            import torch

            return torch.cuda.is_available()
        connect_ray(self.address)
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0


LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
"""A local Ray in single-node mode binds every service (GCS, raylet, workers, agents) to
127.0.0.1; it needs no token. Ray reads the first at import, so it is set before ``import
ray``. Setting ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` yourself is the explicit way to let a
local Ray listen on the machine's address (reachable from the network, without
authentication unless ``RAY_AUTH_MODE`` says otherwise)."""


class UnschedulableError(ValueError):
    """A run asks for more than any node of the cluster has: it would wait forever."""


def check_schedulable(resources: RunResources, sweep_name: str) -> None:
    """Refuse a sweep whose runs ask for more CPUs than the largest live node has."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    largest = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    if resources.cpus > largest:
        total = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes)
        raise UnschedulableError(
            f"sweep {sweep_name}: each run asks for {resources.cpus:g} CPUs (resources.cpus), "
            f"but the largest node of the Ray cluster has {largest:g} ({len(nodes)} node(s), "
            f"{total:g} CPUs in all): no run could ever start. Lower resources.cpus in the "
            "sweep, or add a node with more CPUs")


class RayExposedError(RuntimeError):
    """A local Ray would have listened beyond loopback."""


def connect_ray(address: str | None) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``); else start Ray here, listening on loopback only
    (``LOCAL_RAY_ENV``)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    if address is None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        node_ip = ray.util.get_node_ip_address()
        if node_ip != "127.0.0.1":
            ray.shutdown()
            raise RayExposedError(
                f"the local Ray came up on {node_ip}, not 127.0.0.1, so its services would be "
                "reachable from the network: ray was imported before gatelab could put it in "
                "single-node mode. Set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray "
                "(or call connect_ray first); set it to 1 only to expose Ray on purpose")
