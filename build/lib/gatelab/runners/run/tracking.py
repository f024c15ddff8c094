"""MLflow logging for one run: params, tags, batched metrics, artifacts, and its status.

With no tracking URI, MLflow 3's default is used: ``sqlite:///mlflow.db`` in the working
directory. Metrics are buffered and sent with ``log_batch`` (one call per flush, never one per
step). Runs are found again by the ``gatelab.run_hash`` tag, so a hash maps to one MLflow run.
"""

from __future__ import annotations

import fcntl
import json
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from gatelab.contract import RunStatus, Tag, resolve_tracking_uri, sqlite_path


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the URI in the message, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"the MLflow tracking server {uri} is unreachable ({err}); start it (mlflow server "
            "--host 127.0.0.1 --port 5000) or pass another --tracking-uri"
        ) from None


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts/lists as ``a.b.c -> str(value)`` params."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list) else str(data)}


class RunTracker:
    """One MLflow run. Create with ``RunTracker.open``; call ``flush`` at checkpoints."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri
        self._buffer: list[Metric] = []

    @staticmethod
    def client_for(uri: str | None) -> tuple[MlflowClient, str]:
        """A client for ``uri`` (resolved). A SQLite store is opened under an exclusive lock on
        ``<db>.lock``: MLflow creates and migrates a new database's tables on first use, and
        two processes doing that at once fail (alembic's version row races)."""
        resolved = resolve_tracking_uri(uri)
        check_reachable(resolved)
        db = sqlite_path(resolved)
        if db is None:
            return MlflowClient(tracking_uri=resolved), resolved
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            client = MlflowClient(tracking_uri=resolved)  # creates the tables if missing
        return client, resolved

    @staticmethod
    def find(client: MlflowClient, experiment: str, run_hash: str) -> Any | None:
        """The run recorded for ``run_hash`` in ``experiment``, newest first, or ``None``."""
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = client.search_runs([exp.experiment_id], f"tags.`{Tag.RUN_HASH}` = '{run_hash}'",
                                  order_by=["attributes.start_time DESC"], max_results=5)
        return runs[0] if runs else None

    @classmethod
    def open(cls, client: MlflowClient, uri: str, experiment: str, run_name: str,
             run_id: str | None) -> RunTracker:
        """Reopen ``run_id`` (a resumed run), or start a new run in ``experiment``."""
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            return cls(client, run_id, uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        return cls(client, client.create_run(exp_id, run_name=run_name).info.run_id, uri)

    def log_params(self, params: dict[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def metric(self, key: str, value: float, step: int) -> None:
        """Buffer one metric point; sent at the next ``flush``."""
        self._buffer.append(Metric(key, float(value), int(time.time() * 1000), step))

    def metrics(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.metric(key, value, step)

    def flush(self) -> None:
        buffer, self._buffer = self._buffer, []
        for i in range(0, len(buffer), 1000):
            self.client.log_batch(self.run_id, metrics=buffer[i:i + 1000])

    def log_json(self, name: str, data: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(path))

    def log_arrays(self, name: str, arrays: dict[str, Any]) -> None:
        """Numpy arrays as one compressed ``.npz`` artifact."""
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            with path.open("wb") as f:
                np.savez_compressed(f, **arrays)
            self.client.log_artifact(self.run_id, str(path))

    def log_text(self, name: str, text: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(self.run_id, str(path))

    def close(self, gatelab_status: RunStatus, mlflow_status: str) -> None:
        """Flush, tag the gatelab status, and end the MLflow run."""
        self.flush()
        self.set_tags({Tag.STATUS: gatelab_status})
        self.client.set_terminated(self.run_id, status=mlflow_status)
