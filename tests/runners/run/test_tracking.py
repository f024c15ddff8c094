"""A SQLite tracking store that cannot be used is one ``TrackingError`` naming the URI, the
cause and the fix, raised before MLflow touches it; another program's database is never given
MLflow's tables; a new (missing or empty) store and an existing MLflow store work. A run's
tracker writes each (metric, step) once, also after it is reopened; every failure is recorded,
the latest first, and a run that finishes after failing keeps no sign of the failure but its
history."""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatelab import experiment
from gatelab.contract import Artifact, RunStatus, Tag
from gatelab.runners.run import tracking
from gatelab.runners.run.tracking import (
    RunTracker,
    TrackingError,
    check_sqlite_store,
    check_sqlite_writable,
    note_recorded,
    recorded_run,
)

AS_ROOT = os.geteuid() == 0
ROOT_IGNORES_PERMISSIONS = "root ignores file permissions, so chmod cannot make the store read-only"

HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
"""


def uri_of(db: Path) -> str:
    return f"sqlite:///{db}"


def schema(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT type, name FROM sqlite_master"))


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store holding one experiment, created through ``client_for``."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client, _ = RunTracker.client_for(uri_of(db))
    client.create_experiment("kept")
    return db


@pytest.fixture
def locked(mlflow_store: Path) -> Iterator[Path]:
    """``mlflow_store`` while another process holds a write transaction on it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(mlflow_store)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield mlflow_store
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_text_file_is_named_not_sqlite_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("shopping list\n" * 20)
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(db))
    message = str(caught.value)
    assert message.startswith(f"the tracking store {uri_of(db)} cannot be used: ")
    assert f"{db} is not a SQLite database" in message
    assert "move it aside" in message and "--tracking-uri" in message
    assert "\n" not in message
    assert db.read_text() == "shopping list\n" * 20


def test_another_programs_database_is_refused_and_not_modified(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        con.execute("CREATE TABLE users (name TEXT)")
        con.execute("INSERT INTO notes (body) VALUES ('keep me')")
    con.close()
    before_schema, before_bytes = schema(db), db.read_bytes()
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(db))
    message = str(caught.value)
    assert uri_of(db) in message and "not an MLflow store" in message
    assert "notes, users" in message and "no alembic_version or experiments" in message
    assert message.endswith("pass another --tracking-uri") and "\n" not in message
    assert schema(db) == before_schema == [("table", "notes"), ("table", "users")]
    assert db.read_bytes() == before_bytes


def test_a_store_locked_by_another_process_is_named_after_a_short_wait(locked: Path) -> None:
    start = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(locked), lock_timeout_s=1.0)
    waited = time.monotonic() - start
    message = str(caught.value)
    assert uri_of(locked) in message
    assert "is locked by another process holding a write transaction (waited 1 s)" in message
    assert "end that process or its transaction" in message and "\n" not in message
    assert 0.9 < waited < 10


def test_the_default_lock_wait_is_a_few_seconds(locked: Path) -> None:
    start = time.monotonic()
    with pytest.raises(TrackingError, match="locked by another process"):
        check_sqlite_store(uri_of(locked), locked)
    assert 1 <= time.monotonic() - start < 10
    assert 1 <= tracking.LOCK_TIMEOUT_S <= 10


def test_a_lock_released_within_the_wait_is_waited_for(mlflow_store: Path) -> None:
    holder = sqlite3.connect(mlflow_store, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        client, _ = RunTracker.client_for(uri_of(mlflow_store), lock_timeout_s=5.0)
        assert client.get_experiment_by_name("kept") is not None
    finally:
        release.join()
        holder.close()


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "empty"])
def test_a_missing_or_empty_file_is_a_new_store(tmp_path: Path, content: bytes | None) -> None:
    db = tmp_path / "sub" / "new.db"
    if content is not None:
        db.parent.mkdir()
        db.write_bytes(content)
    client, resolved = RunTracker.client_for(uri_of(db))
    assert resolved == uri_of(db)
    client.create_experiment("fresh")
    assert {"alembic_version", "experiments"} <= {name for _, name in schema(db)}


def test_an_existing_mlflow_store_keeps_working(mlflow_store: Path) -> None:
    before = schema(mlflow_store)
    client, _ = RunTracker.client_for(uri_of(mlflow_store))
    assert client.get_experiment_by_name("kept") is not None
    assert schema(mlflow_store) == before


def test_a_folder_under_a_file_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    db = blocker / "runs" / "mlflow.db"
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(db))
    message = str(caught.value)
    assert uri_of(db) in message
    assert f"its folder {db.parent} cannot be created ({blocker} is a file)" in message
    assert f"move {blocker} aside" in message
    assert blocker.read_text() == "not a folder"


def test_a_folder_given_as_the_database_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match=r"is a folder, not a database file; name a file in "
                                            r"it \(sqlite:///.*mlflow\.db\)"):
        RunTracker.client_for(uri_of(tmp_path))


def test_a_corrupt_sqlite_file_is_named(tmp_path: Path, mlflow_store: Path) -> None:
    db = tmp_path / "broken.db"
    intact = mlflow_store.read_bytes()
    db.write_bytes(intact[:100] + b"\xff" * (len(intact) - 100))  # valid header, garbage pages
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(db))
    message = str(caught.value)
    assert uri_of(db) in message and "\n" not in message
    assert f"{db} is not a readable SQLite database" in message
    assert "move it aside to start a new store there" in message


def deny_writes_to(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """``os.access`` as a non-root user sees it when ``denied`` is read-only."""
    real = os.access

    def access(path: str | os.PathLike[str], mode: int) -> bool:
        if Path(path) == denied and mode & os.W_OK:
            return False
        return real(path, mode)

    monkeypatch.setattr(tracking.os, "access", access)


def test_read_only_as_os_access_reports_it_is_named(tmp_path: Path, mlflow_store: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    deny_writes_to(monkeypatch, mlflow_store)
    with pytest.raises(TrackingError) as caught:
        RunTracker.client_for(uri_of(mlflow_store))
    assert f"{mlflow_store} is read-only; make it writable (chmod u+rw {mlflow_store})" in str(
        caught.value)
    deny_writes_to(monkeypatch, tmp_path)
    with pytest.raises(TrackingError, match=r"its folder .* is read-only \(SQLite writes a "
                                            r"journal beside the database\); make .* writable"):
        check_sqlite_writable(uri_of(tmp_path / "new.db"), tmp_path / "new.db")
    with pytest.raises(TrackingError, match=rf"cannot be created \({tmp_path} is read-only\)"):
        check_sqlite_writable(uri_of(tmp_path / "a" / "new.db"), tmp_path / "a" / "new.db")


@pytest.mark.skipif(AS_ROOT, reason=ROOT_IGNORES_PERMISSIONS)
def test_a_read_only_file_is_named(mlflow_store: Path, tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    db.write_bytes(mlflow_store.read_bytes())
    db.chmod(0o444)
    with pytest.raises(TrackingError, match=rf"{db} is read-only; make it writable"):
        RunTracker.client_for(uri_of(db))


@pytest.mark.skipif(AS_ROOT, reason=ROOT_IGNORES_PERMISSIONS)
def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(TrackingError, match=rf"its folder {folder} is read-only"):
            RunTracker.client_for(uri_of(folder / "mlflow.db"))
    finally:
        folder.chmod(0o755)


def test_gatelab_experiments_open_on_their_training_runs(tmp_path: Path) -> None:
    """The MLflow UI reads ``mlflow.experimentKind``: a model-training experiment opens on its
    runs, not on the GenAI overview of traces. Set when gatelab creates the experiment and
    when it finds one without it."""
    from mlflow.tracking import MlflowClient

    uri = uri_of(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    tracking.RunTracker.open(client, uri, "fresh", "r1", None)
    fresh = client.get_experiment_by_name("fresh")
    assert fresh.tags[experiment.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.create_experiment("older")  # made by something else, without the tag
    tracking.RunTracker.open(client, uri, "older", "r2", None)
    assert client.get_experiment_by_name("older").tags[experiment.EXPERIMENT_KIND_TAG] == (
        experiment.MODEL_TRAINING)
    # Artifacts beside the database, wherever the creating process ran (a Ray job's copy).
    assert fresh.artifact_location == (tmp_path / "mlruns" / "fresh").as_uri()


def test_an_experiment_created_elsewhere_keeps_its_artifacts_beside_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    uri = uri_of(tmp_path / "store" / "mlflow.db")
    (tmp_path / "job-copy").mkdir()
    monkeypatch.chdir(tmp_path / "job-copy")  # where a Ray job's driver or worker runs
    client, _ = RunTracker.client_for(uri)
    run = RunTracker.open(client, uri, "odd name/1", "r1", None)
    run.log_text("hello.txt", "hi")
    exp = client.get_experiment_by_name("odd name/1")
    assert exp.artifact_location == (tmp_path / "store" / "mlruns" / "odd_name_1").as_uri()
    assert list((tmp_path / "job-copy").iterdir()) == []
    assert (tmp_path / "store" / "mlruns" / "odd_name_1" / run.run_id / "artifacts" /
            "hello.txt").read_text() == "hi"
    assert experiment.artifact_location("http://127.0.0.1:5000", "x") is None


def metric_rows(db: Path, run_id: str) -> list[tuple[str, int]]:
    """Every (key, step) row the store holds for ``run_id``, repeats included."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, step FROM metrics WHERE run_uuid = ? ORDER BY key, step",
                           (run_id,)).fetchall()
    return [(key, int(step)) for key, step in rows]


def artifacts(tracker: RunTracker) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(tracker.run_id)}


def test_a_reopened_run_writes_no_metric_step_twice(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    client, uri = RunTracker.client_for(uri_of(db))
    first = RunTracker.open(client, uri, "exp", "run", None)
    for step in (1, 2, 3):
        first.metric("train_loss", 1.0 / step, step)
    first.metric("val_loss", 0.5, 2)
    first.metric("val_loss", 0.6, 2)  # twice at one step in one process: the first stays
    first.flush()  # then killed: no close, no checkpoint beyond step 1

    again = RunTracker.open(client, uri, "exp", "run", first.run_id)
    assert again.recorded == {"train_loss": 3, "val_loss": 2}
    for step in (2, 3, 4):  # replayed from a checkpoint at step 1
        again.metrics({"train_loss": 9.0, "val_loss": 9.0}, step)
    again.close(RunStatus.FINISHED, "FINISHED")
    rows = metric_rows(db, first.run_id)
    assert rows == [("train_loss", 1), ("train_loss", 2), ("train_loss", 3), ("train_loss", 4),
                    ("val_loss", 2), ("val_loss", 3), ("val_loss", 4)]
    history = client.get_metric_history(first.run_id, "train_loss")
    assert [m.value for m in history if m.step == 3] == [1.0 / 3]  # the recorded one


def test_every_failure_is_recorded_the_latest_first_and_a_finish_clears_them(
        tmp_path: Path) -> None:
    client, uri = RunTracker.client_for(uri_of(tmp_path / "mlflow.db"))
    placeholder = RunTracker.open(client, uri, "exp", "baseline-d5b40af2", None)
    placeholder.fail("RayError: the worker died", "worker traceback")
    first = client.get_run(placeholder.run_id)
    assert first.data.tags[Tag.FAILURE] == "RayError: the worker died"
    assert first.data.tags[Tag.STATUS] == RunStatus.FAILED and first.info.status == "FAILED"

    again = RunTracker(client, placeholder.run_id, uri)  # a second failure of a failed run
    again.fail("ValueError: bad corpus", "train traceback")
    assert client.get_run(again.run_id).data.tags[Tag.FAILURE] == "ValueError: bad corpus"
    assert [f["cause"] for f in again.failures()] == ["ValueError: bad corpus",
                                                      "RayError: the worker died"]
    local = client.download_artifacts(again.run_id, Artifact.ERROR, str(tmp_path / "dl"))
    assert Path(local).read_text() == "train traceback"

    retried = RunTracker.open(client, uri, "exp", "baseline lr=0.003 seed=0", again.run_id)
    retried.interrupt(7, "SIGTERM")
    stopped = client.get_run(retried.run_id)
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags[Tag.STATUS] == RunStatus.INTERRUPTED
    assert (stopped.data.tags[Tag.INTERRUPTED_STEP], stopped.data.tags[Tag.INTERRUPTED_BY]) == (
        "7", "SIGTERM")
    assert Tag.FAILURE in stopped.data.tags  # not finished yet: the failure still stands

    resumed = RunTracker.open(client, uri, "exp", "baseline lr=0.003 seed=0", again.run_id)
    resumed.close(RunStatus.FINISHED, "FINISHED")
    done = client.get_run(resumed.run_id)
    assert done.info.run_name == "baseline lr=0.003 seed=0"  # the placeholder is gone
    assert not {Tag.FAILURE, Tag.INTERRUPTED_STEP, Tag.INTERRUPTED_BY} & set(done.data.tags)
    assert Artifact.ERROR not in artifacts(resumed) and Artifact.FAILURES in artifacts(resumed)
    assert len(resumed.failures()) == 2  # the history stays


def test_a_recorded_failure_says_so_after_pickling() -> None:
    """As it crosses the Ray boundary: the driver then does not record it a second time."""
    err = ValueError("bad corpus")
    assert recorded_run(err) is None
    note_recorded(err, "abc123")
    copy = pickle.loads(pickle.dumps(err))
    assert recorded_run(copy) == "abc123" and str(copy) == "bad corpus"
