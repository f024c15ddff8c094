"""Exactly-once metrics: a run killed (SIGKILL) at every point of its evaluation/flush/checkpoint
cycle, and once with its checkpoint corrupted, then resumed each time into the same MLflow run,
ends with every (metric, step) pair recorded once: none twice, none missing.

The recipe evaluates three times per checkpoint, as the shipped ``sink-onset`` recipe does
before its first checkpoint, so that kills fall between a flush and the next checkpoint. Each
kill is exact (``runners/run/kill_points.py``): the process kills itself at the named point.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.runners.run.kill_points import KILL_AT_ENV, KillPoint

REPO = Path(__file__).resolve().parents[3]
STEPS, EVAL_EVERY, CHECKPOINT_EVERY = 12, 2, 6
RECIPE = ["--steps", str(STEPS), "--batch-size", "4", "--seq-len", "32", "--set",
          f"eval_every={EVAL_EVERY}", "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--set",
          "warmup_steps=2", "--set", "eval_batches=1", "--set", "measure_batches=1"]
CYCLE = [
    (KillPoint.EVAL_FLUSHED, 4),  # flushed, no checkpoint yet: restarts from step 0
    (KillPoint.CHECKPOINT_FLUSHED, 6),  # flushed, its checkpoint not written
    (KillPoint.CHECKPOINTED, 6),
    (KillPoint.STEPPED, 7),
    (KillPoint.EVALUATED, 8),  # buffered, not flushed
    (KillPoint.EVAL_FLUSHED, 10),  # flushed after the checkpoint at 6: replayed from it
    ("corrupt", 0),  # the checkpoint at 6 is set aside: restarts from step 0 again
    (KillPoint.FINAL_FLUSHED, STEPS),  # the final metrics flushed, not marked finished
    (KillPoint.CLOSED, STEPS),  # finished, its checkpoint not yet removed
]


def train(tmp_path: Path, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "gatelab", "train", "baseline", *RECIPE, "--threads", "1",
         "--no-progress", "--experiment", "test", "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--work-dir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def pairs(db: Path) -> dict[tuple[str, int], int]:
    """How often each (key, step) is recorded, over every run of the store."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, step, COUNT(*) FROM metrics GROUP BY key, step")
        return {(key, int(step)): count for key, step, count in rows}


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_kills_at_every_point_of_the_cycle_record_each_metric_step_once(tmp_path: Path) -> None:
    checkpoints = tmp_path / "work" / "checkpoints"
    for point, step in CYCLE:
        if point == "corrupt":
            [checkpoint] = checkpoints.glob("*/last.pt")
            checkpoint.write_bytes(checkpoint.read_bytes()[:100])
            continue
        killed = train(tmp_path, f"{point}@{step}")
        assert killed.returncode == -9, f"{point}@{step}: {killed.stderr[-2000:]}"
    assert list(checkpoints.glob("*/last.pt.corrupt-*")), "the corrupt checkpoint was not read"
    done = train(tmp_path, None)  # the run finished before its last kill: nothing to train
    assert done.returncode == 0 and "nothing trained" in done.stdout, done.stderr[-2000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["gatelab.status"] == "finished"
    counts = pairs(tmp_path / "mlflow.db")
    assert {pair: n for pair, n in counts.items() if n > 1} == {}
    steps = {key: sorted(s for k, s in counts if k == key) for key, _ in counts}
    evaluations = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert steps["train_loss"] == list(range(1, STEPS + 1))
    for key in ("val_loss", "val_ppl", "val_bpb", "f_attn", "m_act"):
        assert steps[key] == evaluations, key
    for key in ("val_loss_ctx1x", "loss_spikes", "train_time_s"):  # the summary's
        assert steps[key] == [STEPS], key
