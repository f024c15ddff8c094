"""MLflow logging for one run: params, tags, batched metrics, artifacts, and its status.

With no tracking URI, MLflow 3's default is used: ``sqlite:///mlflow.db`` in the working
directory. Metrics are buffered and sent with ``log_batch`` (one call per flush, never one per
step). Runs are found again by the ``gatelab.run_hash`` tag, so a hash maps to one MLflow run.

A SQLite store is checked before MLflow opens it (``check_sqlite_store``): a file that is not
SQLite, a SQLite database that is not an MLflow store (never given MLflow's tables), one that
another process holds locked, or a read-only file or folder is a ``TrackingError`` naming the
URI, the cause and the fix, raised before any training starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
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


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The experiment kind that makes the MLflow UI (3.x) open an experiment on its training runs
rather than on the GenAI overview of traces (empty for gatelab)."""


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


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite 3 database file."""
MLFLOW_TABLES = frozenset({"alembic_version", "experiments"})
"""Tables every MLflow SQLite store has; a database holding anything else but not these is
another program's."""
LOCK_TIMEOUT_S = 5.0
"""How long to wait for another process's write transaction on the store to end, in seconds."""


def _unusable(uri: str, cause: str, fix: str | None) -> TrackingError:
    """The error for the store ``uri``: why it cannot be used, and what to do besides passing
    another ``--tracking-uri``."""
    first = "" if fix is None else f"{fix}, or "
    return TrackingError(f"the tracking store {uri} cannot be used: {cause}; {first}pass "
                         "another --tracking-uri")


def check_sqlite_writable(uri: str, db: Path) -> None:
    """Raise ``TrackingError`` unless the SQLite store ``db`` of ``uri`` can be written: its
    folder exists or can be created, and the folder and ``db`` (if there) are writable.
    Permissions are read with ``os.access``, which a root process passes everywhere but on a
    read-only file system."""
    folder = db.parent
    if not folder.is_dir():
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise _unusable(uri, f"its folder {folder} cannot be created ({ancestor} is a "
                            "file)", f"move {ancestor} aside")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise _unusable(uri, f"its folder {folder} cannot be created ({ancestor} is "
                            "read-only)", f"make {ancestor} writable")
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unusable(uri, f"its folder {folder} is read-only (SQLite writes a journal beside "
                        "the database)", f"make {folder} writable")
    if db.is_dir():
        raise _unusable(uri, f"{db} is a folder, not a database file",
                        f"name a file in it (sqlite:///{db / 'mlflow.db'})")
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise _unusable(uri, f"{db} is read-only", f"make it writable (chmod u+rw {db})")


def check_sqlite_store(uri: str, db: Path, timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Raise ``TrackingError`` unless MLflow can use the SQLite store ``db`` of ``uri``:
    ``check_sqlite_writable``, then ``db`` is missing, empty (a new store) or an MLflow store,
    and no other process holds a write transaction on it for ``timeout_s``. Never writes to
    ``db``: it reads the schema, then begins and rolls back a write transaction, which waits
    for another's lock."""
    check_sqlite_writable(uri, db)
    if not db.exists():
        return
    with db.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    new_store = "move it aside to start a new store there (an empty file is one)"
    if header and header != SQLITE_HEADER:
        raise _unusable(uri, f"{db} is not a SQLite database", new_store)
    con = sqlite3.connect(db, timeout=timeout_s, isolation_level=None)
    try:
        names = {name for (name,) in con.execute("SELECT name FROM sqlite_master")
                 if not name.startswith("sqlite_")}
        if names and not names >= MLFLOW_TABLES:
            listed = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise _unusable(uri, f"{db} is a SQLite database but not an MLflow store (it holds "
                            f"{listed}; no {' or '.join(sorted(MLFLOW_TABLES - names))}), and "
                            "gatelab leaves another program's database untouched", None)
        con.execute("BEGIN IMMEDIATE")  # waits up to timeout_s for another writer to finish
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if "locked" not in str(err):
            raise _unusable(uri, f"{db} cannot be read ({err})", new_store) from None
        raise _unusable(uri, f"{db} is locked by another process holding a write transaction "
                        f"(waited {timeout_s:g} s)", "end that process or its transaction "
                        "(an open sqlite3 shell, a stuck run) and try again") from None
    except sqlite3.DatabaseError as err:
        raise _unusable(uri, f"{db} is not a readable SQLite database ({err})",
                        new_store) from None
    finally:
        con.close()


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
    def client_for(uri: str | None,
                   lock_timeout_s: float = LOCK_TIMEOUT_S) -> tuple[MlflowClient, str]:
        """A client for ``uri`` (resolved), or ``TrackingError`` if the store cannot be used
        (``check_reachable``, ``check_sqlite_store``, which waits up to ``lock_timeout_s``
        for another process's write transaction). A SQLite store is checked and opened under
        an exclusive lock on ``<db>.lock``: MLflow creates and migrates a new database's tables
        on first use, and two processes doing that at once fail (alembic's version row races);
        under the lock, no check sees a store another gatelab process is half-way creating."""
        resolved = resolve_tracking_uri(uri)
        check_reachable(resolved)
        db = sqlite_path(resolved)
        if db is None:
            return MlflowClient(tracking_uri=resolved), resolved
        check_sqlite_writable(resolved, db)  # before creating its folder and lock file
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            check_sqlite_store(resolved, db, lock_timeout_s)
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
        if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
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

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """Record the data a run trained on as an MLflow dataset input (the UI's Dataset
        column): ``digest`` is the corpus's content hash, ``context`` the split."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=source)
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])

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
