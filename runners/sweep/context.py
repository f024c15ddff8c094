"""Where a sweep records and how it reaches Ray: resources and places, never identity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from gatelab.runners.run.numerics import Numerics, resolve_numerics
from gatelab.runners.run.storage import STORAGE_ENV, Storage
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
    storage: str | None = None
    """Where checkpoints, leases and the token cache live for every node (``--storage``; see
    ``runners/run/storage.py``); ``None``: ``$GATELAB_STORAGE``, else ``work_dir``."""
    study_storage: str | None = None
    """The LR search's Optuna storage URL (``--study-storage``); ``None``: see
    ``lr_search.storage_url``."""
    task_retries: int = 2
    """How often Ray reruns a run whose worker or node died (a system failure); a run that
    raised (a bad spec, a missing corpus) or diverged is never retried."""
    client: MlflowClient = field(init=False)
    place: Storage = field(init=False)
    storage_named: bool = field(init=False)
    """Whether a storage was named (flag or environment) rather than the work dir taken."""

    def __post_init__(self) -> None:
        self.client, self.tracking_uri = RunTracker.client_for(self.tracking_uri)
        self.storage_named = bool(self.storage or os.environ.get(STORAGE_ENV))
        self.place = Storage.resolve(self.storage, self.work_dir)

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


class ClusterPlaceError(ValueError):
    """A sweep on several nodes would record or keep its files where only one node sees
    them."""


def check_cluster_places(ctx: SweepContext, sweep_name: str) -> None:
    """On a Ray cluster of more than one live node, refuse a tracking store or a storage that
    lives on one node's disk: the runs of other nodes would record into their own copy (or
    fail), and their checkpoints could not be resumed elsewhere."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    if not ctx.uri.startswith(("http://", "https://")):
        raise ClusterPlaceError(
            f"sweep {sweep_name}: the Ray cluster has {len(nodes)} nodes, but the tracking URI "
            f"{ctx.uri} is a store on one machine's disk: runs on the other nodes would not "
            "reach it. Start a tracking server on a machine every node reaches (gatelab server "
            "--store DIR --host 0.0.0.0) and pass --tracking-uri http://HOST:5000")
    if not ctx.storage_named:
        raise ClusterPlaceError(
            f"sweep {sweep_name}: the Ray cluster has {len(nodes)} nodes, but no --storage was "
            f"named, so checkpoints and the token cache would stay in {ctx.place.root} on each "
            "node and a run moved to another node would start over. Pass --storage with a "
            "path every node mounts (or an fsspec URI such as s3://bucket/gatelab), or set "
            f"{STORAGE_ENV}")


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
    # On a cluster (a job's driver) worker output goes to the driver, so a worker's traceback
    # reaches `ray job logs`; a local sweep keeps its terminal for the live view.
    ray.init(address=address, include_dashboard=False, log_to_driver=address is not None,
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
