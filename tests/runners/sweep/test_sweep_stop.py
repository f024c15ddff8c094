"""SIGTERM to a sweep's driver (a preempted job) is passed on to its runs: each checkpoints at
its next step boundary and ends ``KILLED`` (interrupted, not failed), the driver exits within
its grace period, and the same sweep resumes each run into its MLflow run. SIGTERM to a run's
worker (a node going away) checkpoints the run, and Ray reruns it from there in the same
sweep."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from local_ray import ray_env
from mlflow.tracking import MlflowClient

from gatelab.contract import Tag
from gatelab.runners.sweep.execute import DRIVER_GRACE_S

REPO = Path(__file__).resolve().parents[3]
STEPS = 300
SWEEPS = f"""
stoppable:
  description: one run long enough to be stopped
  variants: [baseline]
  recipe: tiny
  overrides: {{steps: {STEPS}, eval_every: 10, checkpoint_every: 100, warmup_steps: 5,
              batch_size: 4, seq_len: 32, eval_batches: 1, measure_batches: 1}}
  seeds: [0]
"""


def command(tmp_path: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "gatelab", "sweep", "stoppable", "--sweeps",
            str(tmp_path / "sweeps.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--work-dir", str(tmp_path / "work"), "--no-progress", *more]


def train_loss_steps(db: Path) -> list[int]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as con:
        try:
            rows = con.execute("SELECT step FROM metrics WHERE key = 'train_loss' ORDER BY step")
            return [int(step) for (step,) in rows]
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def training_run(db: Path) -> Any:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("gatelab")
    assert experiment is not None
    [run] = [r for r in client.search_runs([experiment.experiment_id])
             if Tag.RUN_HASH in r.data.tags]
    return run


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_sigterm_to_the_driver_stops_its_runs_at_a_checkpoint_and_the_sweep_resumes(
        tmp_path: Path) -> None:
    (tmp_path / "sweeps.yaml").write_text(SWEEPS)
    db = tmp_path / "mlflow.db"
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(command(tmp_path), cwd=REPO, env=ray_env(), stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not train_loss_steps(db):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never logged a step"
            time.sleep(0.5)
        sent = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=DRIVER_GRACE_S + 60) == 130, log.read_text()[-3000:]
        assert time.monotonic() - sent < DRIVER_GRACE_S + 30
    finally:
        with contextlib.suppress(ProcessLookupError):  # Ray processes the session left
            os.killpg(driver.pid, signal.SIGKILL)
    assert "interrupted; run the same command again to resume" in log.read_text()

    stopped = training_run(db)
    tags = stopped.data.tags
    assert stopped.info.status == "KILLED", tags
    assert tags["gatelab.status"] == "interrupted" and Tag.FAILURE not in tags
    step = int(tags["gatelab.interrupted_step"])
    assert 10 <= step < STEPS
    checkpoint = tmp_path / "work" / "checkpoints" / tags[Tag.RUN_HASH] / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == step

    again = subprocess.run(command(tmp_path), cwd=REPO, env=ray_env(), capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = training_run(db)
    assert resumed.info.run_id == stopped.info.run_id
    assert resumed.data.tags["gatelab.status"] == "finished"
    assert train_loss_steps(db) == list(range(1, STEPS + 1))


def train_workers(root: int) -> list[int]:
    """The Ray train-task workers under process ``root`` (never another Ray's)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True,
                         text=True).stdout
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for line in out.splitlines():
        pid, ppid, args = line.split(maxsplit=2)
        children.setdefault(int(ppid), []).append(int(pid))
        names[int(pid)] = args
    tree, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.add(child)
            todo.append(child)
    return [pid for pid in tree if "ray::train_task" in names.get(pid, "")]


def stopped_checkpoint_step(checkpoints: Path) -> int | None:
    """The step of a checkpoint written off the every-100 cadence (a stop's), else ``None``."""
    for path in checkpoints.glob("*/last.pt"):
        with contextlib.suppress(Exception):  # replaced while read: look again
            step = int(torch.load(path, weights_only=True)["step"])
            if step % 100:
                return step
    return None


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_sigterm_to_a_worker_checkpoints_its_run_and_ray_reruns_it_from_there(
        tmp_path: Path) -> None:
    (tmp_path / "sweeps.yaml").write_text(SWEEPS)
    db = tmp_path / "mlflow.db"
    log = tmp_path / "driver.log"
    checkpoints = tmp_path / "work" / "checkpoints"
    with log.open("w") as out:
        driver = subprocess.Popen(command(tmp_path, "--task-retries", "1"), cwd=REPO,
                                  env=ray_env(), stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (train_loss_steps(db) and train_workers(driver.pid)):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never logged a step"
            time.sleep(0.5)
        [worker] = train_workers(driver.pid)
        os.kill(worker, signal.SIGTERM)
        step = None
        while step is None and driver.poll() is None:
            step = stopped_checkpoint_step(checkpoints)
            time.sleep(0.1)
        assert step is not None and 10 <= step < STEPS, log.read_text()[-3000:]
        assert driver.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    run = training_run(db)
    assert run.data.tags["gatelab.status"] == "finished"
    assert not {Tag.FAILURE, "gatelab.interrupted_step"} & set(run.data.tags)
    assert train_loss_steps(db) == list(range(1, STEPS + 1))
