"""Where a sweep records and how it reaches Ray: resources and places, never identity.

Both are checked when the context is made, before any plan (a dry run included): the storage
must take a file (``check_writable``), and a Ray address must answer within
``RAY_CONNECT_TIMEOUT_S`` when the sweep connects (``check_reachable``; Ray itself would wait
minutes, printing its own warnings). A local Ray started here is stopped with the driver,
however the driver ends (``ray_guard.py``).
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from gatelab.runners.run.numerics import Numerics, resolve_numerics
from gatelab.runners.run.storage import STORAGE_ENV, Storage, StorageError
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.sweep.ray_guard import guard_local_ray
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
        self.storage_named = bool(self.storage or os.environ.get(STORAGE_ENV))
        self.place = Storage.resolve(self.storage, self.work_dir)
        check_writable(self.place, "--storage" if self.storage else
                       f"${STORAGE_ENV}" if self.storage_named else "--work-dir")
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


def check_writable(place: Storage, flag: str) -> None:
    """``StorageError`` naming ``flag`` and the place unless a file can be written there: in
    the folder (or the nearest folder above it that exists, which is then left as it was), or
    under the fsspec URI. The probe file is removed."""
    probe = f".gatelab-write-check-{uuid.uuid4().hex[:8]}"
    try:
        if place.is_path:
            folder = Path(place.root)
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is a file, not a folder")
            with tempfile.NamedTemporaryFile(dir=folder, prefix=probe):
                pass
        else:
            import fsspec

            fs, base = fsspec.core.url_to_fs(place.root)
            fs.pipe_file(f"{base.rstrip('/')}/{probe}", b"")
            fs.rm_file(f"{base.rstrip('/')}/{probe}")
    except (OSError, ImportError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise StorageError(
            f"{flag} {place.root}: nothing can be written there ({reason}); give a folder "
            "(or fsspec URI) this user can write, which every node reaches on a cluster"
        ) from None


RAY_CONNECT_TIMEOUT_S = 5.0
"""Seconds a Ray address has to accept a connection before the sweep gives up on it."""


class RayUnreachableError(RuntimeError):
    """No Ray cluster answers at the address a sweep was given."""


def check_reachable(address: str, flag: str) -> None:
    """``RayUnreachableError`` in at most ``RAY_CONNECT_TIMEOUT_S`` when nothing accepts a
    connection at ``address`` (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``, the latest Ray
    started on this machine); ``flag`` says where the address came from."""
    target = address.removeprefix("ray://")
    if target == "local":
        return
    if target == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise RayUnreachableError(
                f"{flag} auto: no Ray runs on this machine; start one (ray start --head) or "
                "leave the address out for a local Ray started by the sweep") from None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host or "://" in target:
        raise RayUnreachableError(
            f"{flag} {address}: not a Ray address; give HOST:PORT (the head node's GCS port, "
            "6379 unless ray start --port said otherwise), ray://HOST:10001 or auto "
            "(http://HOST:8265 is the address of ray job submit, not of a sweep)")
    try:
        socket.create_connection((host.strip("[]"), int(port)),
                                 timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RayUnreachableError(
            f"{flag} {address}: no Ray cluster answers there ({reason}, within "
            f"{RAY_CONNECT_TIMEOUT_S:g} s); start it (ray start --head on that machine) or "
            "check the address, or leave it out for a local Ray started by the sweep"
        ) from None


class RayExposedError(RuntimeError):
    """A local Ray would have listened beyond loopback."""


def connect_ray(address: str | None) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``), once it answers (``check_reachable``); else
    start Ray here, listening on loopback only (``LOCAL_RAY_ENV``) and stopped with this
    process (``ray_guard.guard_local_ray``)."""
    flag = "--address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_reachable(address, flag)
    # On a cluster (a job's driver) worker output goes to the driver, so a worker's traceback
    # reaches `ray job logs`; a local sweep keeps its terminal for the live view.
    ray.init(address=address, include_dashboard=False, log_to_driver=address is not None,
             configure_logging=False)
    if address is None:
        guard_local_ray()
    if address is None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        node_ip = ray.util.get_node_ip_address()
        if node_ip != "127.0.0.1":
            ray.shutdown()
            raise RayExposedError(
                f"the local Ray came up on {node_ip}, not 127.0.0.1, so its services would be "
                "reachable from the network: ray was imported before gatelab could put it in "
                "single-node mode. Set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray "
                "(or call connect_ray first); set it to 1 only to expose Ray on purpose")
