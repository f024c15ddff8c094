"""MLflow logging for one run: params, tags, batched metrics, artifacts, and its status.

With no tracking URI, MLflow 3's default is used: ``sqlite:///mlflow.db`` in the working
directory. Metrics are buffered and sent with ``log_batch`` (one call per flush, never one per
step). Runs are found again by the ``gatelab.run_hash`` tag, so a hash maps to one MLflow run.

A SQLite store is checked before MLflow opens it (``check_sqlite_store``): a file that is not
SQLite, a SQLite database that is not an MLflow store (never given MLflow's tables), one that
another process holds locked, or a read-only file or folder is a ``TrackingError`` naming the
URI, the cause and the fix, raised before any training starts.

A training run also logs MLflow's system metrics (``system/cpu_utilization_percentage``, memory,
disk, network, and GPU where ``nvidia-ml-py`` is installed; ``SystemMetrics``) while it trains,
and a sweep nests its runs under one parent run (``nested_under``, ``runners/sweep/parent.py``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from gatelab.contract import (
    DONE_STATUSES,
    Artifact,
    RunStatus,
    Tag,
    resolve_tracking_uri,
    sqlite_path,
)
from gatelab.experiment import ensure_experiment
from gatelab.metrics import is_declared


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


def nested_under(parent_run_id: str | None) -> dict[str, str]:
    """The tag that nests a run under ``parent_run_id`` in the MLflow UI (MLflow's own
    ``mlflow.parentRunId``); none for ``None``."""
    return {} if parent_run_id is None else {MLFLOW_PARENT_RUN_ID: parent_run_id}


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


SYSTEM_SAMPLE_S = 10.0
"""Seconds between two samples of the system metrics (MLflow's default)."""
SYSTEM_SAMPLES_PER_POINT = 3
"""Samples averaged into one logged point: a point every 30 s, 120 an hour per metric, light
enough for a run of days; a run shorter than that still gets its point, when it closes."""
SYSTEM_METRICS_THREAD = "SystemMetricsMonitor"
"""The name of MLflow's sampling thread: one per watched run, joined when the run closes."""

_log = logging.getLogger(__name__)


class SystemMetrics:
    """MLflow's ``SystemMetricsMonitor`` for one run: a daemon thread samples CPU, memory,
    disk, network (and GPUs) every ``SYSTEM_SAMPLE_S`` and logs their means as ``system/*``
    metrics. ``stop`` joins the thread and logs the stretch since the last point, which MLflow
    itself drops (a run shorter than a point would have none). Best effort: a failure to log
    them is a warning, never a failed run. MLflow's ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
    and ``MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING`` override the cadence."""

    def __init__(self, monitor: Any, run_id: str):
        self.monitor, self.run_id = monitor, run_id

    @classmethod
    def start(cls, run_id: str, uri: str, resumed: bool) -> SystemMetrics | None:
        """Watch ``run_id`` (a ``resumed`` run continues its steps); ``None`` where system
        metrics are unavailable (no ``psutil``) or turned off
        (``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``)."""
        if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in {"false", "0"}:
            return None
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:  # psutil is missing
            return None
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_SAMPLE_S,
                                       samples_before_logging=SYSTEM_SAMPLES_PER_POINT,
                                       resume_logging=resumed, tracking_uri=uri)
        monitor.start()
        return cls(monitor, run_id)

    def stop(self) -> None:
        """End the sampling thread (joined), then log the last stretch as one point."""
        monitor = self.monitor
        monitor.finish()
        try:
            monitor.collect_metrics()
            last = monitor.aggregate_metrics()
            if last:
                monitor.publish_metrics(last)
                monitor.mlflow_logger.flush()
        except Exception as err:  # a missing point must not fail the run
            _log.warning("the last system metrics of run %s were not logged: %s",
                         self.run_id, err)


MAX_CAUSE_CHARS = 5000
"""The longest failure cause kept in the ``gatelab.failure`` tag (MLflow's limit on a tag)."""
ATTEMPT_TAGS = (Tag.FAILURE, Tag.INTERRUPTED_STEP, Tag.INTERRUPTED_BY)
"""Tags that say how an earlier attempt of a run ended: a run that finishes clears them."""
RECORDED_ATTR = "gatelab_recorded_run_id"
"""Set on an exception whose failure a ``RunTracker`` recorded (``note_recorded``): the sweep's
driver then knows it need not record it again."""


def failure_cause(err: BaseException) -> str:
    """``err`` as a failure's cause: its type and message."""
    return f"{type(err).__name__}: {err}"


def note_recorded(err: BaseException, run_id: str) -> None:
    """Mark ``err`` as recorded as the failure of ``run_id`` (the mark survives pickling, so it
    crosses the Ray boundary with the exception)."""
    setattr(err, RECORDED_ATTR, run_id)


def recorded_run(err: BaseException | None) -> str | None:
    """The run ``err`` was recorded as the failure of, else ``None``."""
    run_id = getattr(err, RECORDED_ATTR, None)
    return run_id if isinstance(run_id, str) else None


def last_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """The last step recorded of each metric of ``run_id`` (MLflow keeps each metric's point of
    the largest step as its latest, so this reads no history)."""
    steps: dict[str, int] = {}
    for metric in client.get_run(run_id).data.to_proto().metrics:
        steps[metric.key] = max(steps.get(metric.key, metric.step), metric.step)
    return steps


class RunTracker:
    """One MLflow run. Create with ``RunTracker.open``; call ``flush`` at checkpoints.

    Each metric is written once per step: a point at or before the last step recorded of its
    key is dropped (``recorded``, read back from the store when a run is reopened). A resumed
    run replays the steps since its checkpoint, and so never writes a (key, step) pair twice,
    whatever it was killed between (a flush and the next checkpoint, a checkpoint set aside as
    corrupt, the final metrics and the run's end)."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str,
                 recorded: dict[str, int] | None = None):
        self.client, self.run_id, self.uri = client, run_id, uri
        self._buffer: list[Metric] = []
        self._system: SystemMetrics | None = None
        self.recorded: dict[str, int] = dict(recorded or {})
        """The last step of each metric key, recorded or buffered."""

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
        """Reopen ``run_id`` (a resumed or retried run: named ``run_name``, which replaces a
        placeholder name, and knowing the steps it recorded), or start a new run in
        ``experiment``."""
        if run_id is not None:
            client.update_run(run_id, status="RUNNING", name=run_name)
            return cls(client, run_id, uri, last_steps(client, run_id))
        exp_id = ensure_experiment(client, uri, experiment)
        return cls(client, client.create_run(exp_id, run_name=run_name).info.run_id, uri)

    def log_params(self, params: dict[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def metric(self, key: str, value: float, step: int) -> None:
        """Buffer one metric point, sent at the next ``flush``; dropped if ``key`` has a point
        at ``step`` or after it already (see the class docstring). ``key`` must be a name of
        the contract (``gatelab.metrics``): a metric no reader declares is a ``ValueError``."""
        if not is_declared(key):
            raise ValueError(f"the metric {key!r} is not declared: add it to gatelab/metrics.py "
                             "(Metric, or a naming rule) with its readers in READ_BY")
        if step <= self.recorded.get(key, -1):
            return
        self.recorded[key] = step
        self._buffer.append(Metric(str(key), float(value), int(time.time() * 1000), step))

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

    def watch_system(self, resumed: bool) -> None:
        """Log system metrics until ``close`` (``SystemMetrics``)."""
        self._system = SystemMetrics.start(self.run_id, self.uri, resumed)

    def fail(self, cause: str, detail: str | None = None,
             tags: dict[str, str] | None = None) -> None:
        """Record a failure and end the run ``failed``: ``cause`` (one line) as the
        ``gatelab.failure`` tag and first in ``failures.json`` (every failure, the latest
        first), ``detail`` (a traceback) as ``error.txt``, ``tags`` beside them. The one way any
        code records that a run failed; a run that later finishes clears the tag and
        ``error.txt`` (``close``) and keeps the history."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        self.log_json(Artifact.FAILURES, [{"at": at, "cause": cause}, *self.failures()])
        self.set_tags({**(tags or {}), Tag.FAILURE: cause[:MAX_CAUSE_CHARS]})
        if detail:
            self.log_text(Artifact.ERROR, detail)
        self.close(RunStatus.FAILED, "FAILED")

    def failures(self) -> list[dict[str, str]]:
        """The run's recorded failures, the latest first (``failures.json``)."""
        if Artifact.FAILURES not in {f.path for f in self.client.list_artifacts(self.run_id)}:
            return []
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(self.run_id, Artifact.FAILURES, tmp)
            history: list[dict[str, str]] = json.loads(Path(path).read_text())
        return history

    def interrupt(self, step: int, signal_name: str) -> None:
        """End the run ``KILLED`` (gatelab's ``interrupted``) at ``step``, stopped by
        ``signal_name``: its checkpoint resumes it."""
        self.set_tags({Tag.INTERRUPTED_STEP: str(step), Tag.INTERRUPTED_BY: signal_name})
        self.close(RunStatus.INTERRUPTED, "KILLED")

    def close(self, gatelab_status: RunStatus, mlflow_status: str) -> None:
        """Stop the system metrics, flush, tag the gatelab status, and end the MLflow run."""
        system, self._system = self._system, None
        if system is not None:
            system.stop()
        self.flush()
        if gatelab_status in DONE_STATUSES:
            self._clear_attempts()
        self.set_tags({Tag.STATUS: gatelab_status})
        self.client.set_terminated(self.run_id, status=mlflow_status)

    def _clear_attempts(self) -> None:
        """Remove what earlier attempts left that says the run failed or was stopped: the
        ``ATTEMPT_TAGS`` and ``error.txt`` (``failures.json`` stays, as history)."""
        tags = self.client.get_run(self.run_id).data.tags
        for tag in ATTEMPT_TAGS:
            if tag in tags:
                self.client.delete_tag(self.run_id, tag)
        if Artifact.ERROR in {f.path for f in self.client.list_artifacts(self.run_id)}:
            self._delete_artifact(Artifact.ERROR)

    def _delete_artifact(self, name: str) -> None:
        """Delete the artifact ``name``; a store that refuses is a warning, never a failure."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = self.client.get_run(self.run_id).info.artifact_uri
        try:
            get_artifact_repository(uri, tracking_uri=self.uri).delete_artifacts(name)
        except Exception as err:  # an artifact store without deletion
            _log.warning("%s of run %s was not removed (%s): it describes an earlier failure",
                         name, self.run_id, err)
