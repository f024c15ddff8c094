"""SIGTERM to a real ``gatelab train`` (what ``timeout``, Slurm, Kubernetes and Ray send before
a kill): the run checkpoints at its next step boundary, its MLflow run ends ``KILLED`` at that
step, the process exits within the grace period, and the same command resumes it into the same
MLflow run, each (metric, step) recorded once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from gatelab.runners.run.stop_signals import STOP_GRACE_S

REPO = Path(__file__).resolve().parents[3]
STEPS = 200
RECIPE = ["--steps", str(STEPS), "--batch-size", "4", "--seq-len", "32", "--set",
          "eval_every=10", "--set", "checkpoint_every=50", "--set", "warmup_steps=5",
          "--set", "eval_batches=1", "--set", "measure_batches=1"]


def command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "gatelab", "train", "baseline", *RECIPE, "--threads", "1",
            "--no-progress", "--experiment", "test", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--work-dir", str(tmp_path / "work")]


def env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}


def recorded_steps(db: Path, key: str) -> list[int]:
    """Every step ``key`` is recorded at, repeats included (none while the store is new)."""
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as con:
        try:
            rows = con.execute("SELECT step FROM metrics WHERE key = ? ORDER BY step",
                               (key,)).fetchall()
        except sqlite3.OperationalError:  # the tables are not made yet
            return []
    return [int(step) for (step,) in rows]


def repeated_pairs(db: Path) -> list[tuple[str, int, int]]:
    """(key, step, count) of every metric step recorded more than once."""
    with sqlite3.connect(db) as con:
        return con.execute("SELECT key, step, COUNT(*) FROM metrics GROUP BY run_uuid, key, step "
                           "HAVING COUNT(*) > 1").fetchall()


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_sigterm_checkpoints_ends_killed_and_the_same_command_resumes(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(command(tmp_path), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not recorded_steps(db, "train_loss"):  # training has begun (flushed at step 10)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never logged a step"
        time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOP_GRACE_S + 60)
    assert time.monotonic() - sent < STOP_GRACE_S + 15, "the stop took longer than its grace"
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("test")
    assert experiment is not None
    [stopped] = client.search_runs([experiment.experiment_id])
    tags = stopped.data.tags
    assert stopped.info.status == "KILLED" and tags["gatelab.status"] == "interrupted"
    assert tags["gatelab.interrupted_by"] == "SIGTERM"
    step = int(tags["gatelab.interrupted_step"])
    assert 10 <= step < STEPS
    checkpoint = tmp_path / "work" / "checkpoints" / tags["gatelab.run_hash"] / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == step  # at the boundary reached
    assert recorded_steps(db, "train_loss") == list(range(1, step + 1))  # flushed up to it

    again = subprocess.run(command(tmp_path), cwd=REPO, env=env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    [resumed] = client.search_runs([experiment.experiment_id])
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    assert not {"gatelab.interrupted_step", "gatelab.interrupted_by"} & set(resumed.data.tags)
    assert not checkpoint.exists()
    assert recorded_steps(db, "train_loss") == list(range(1, STEPS + 1))
    assert repeated_pairs(db) == []
