"""A training run logs MLflow's system metrics: a short run gets its point when it closes, the
sampling thread is gone once the run ends, and watching costs a tiny run well under a second."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.contract import RunStatus
from gatelab.registry.loader import load_variant
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.tracking import (
    SYSTEM_METRICS_THREAD,
    SYSTEM_SAMPLE_S,
    RunTracker,
    SystemMetrics,
)
from gatelab.runners.run.train import train

SHORT = {"steps": 20, "eval_every": 10, "checkpoint_every": 10, "warmup_steps": 3,
         "batch_size": 8, "seq_len": 64, "eval_batches": 2, "measure_batches": 1}


def sampling_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == SYSTEM_METRICS_THREAD]


@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_a_short_run_has_system_metrics_and_leaves_no_thread(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = Resources(threads=1, tracking_uri=uri, work_dir=tmp_path / "work", experiment="test")
    assert sampling_threads() == []
    result = train(load_variant("baseline"), load_recipe("tiny", SHORT), res)
    assert result.run_id is not None
    assert sampling_threads() == []
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    system = {k: v for k, v in metrics.items() if k.startswith("system/")}
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                "system/disk_usage_percentage"):
        assert key in system, sorted(system)
    assert system["system/system_memory_usage_megabytes"] > 0
    assert 0 <= system["system/cpu_utilization_percentage"] <= 100


def test_watching_costs_little_and_a_closed_run_stops_its_thread(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, uri = RunTracker.client_for(uri)
    tracker = RunTracker.open(client, uri, "test", "r", None)
    start = time.perf_counter()
    tracker.watch_system(resumed=False)
    assert len(sampling_threads()) == 1
    tracker.close(RunStatus.FINISHED, "FINISHED")
    # Start, a sample, the join and one logged point: well under a sampling interval (a thread
    # left to finish its wait would hold the run's end up to SYSTEM_SAMPLE_S).
    assert time.perf_counter() - start < min(3.0, SYSTEM_SAMPLE_S / 2)
    assert sampling_threads() == []
    history = client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in history] == [0]


def test_system_metrics_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    assert SystemMetrics.start("no-such-run", "sqlite:///unused.db", resumed=False) is None
    assert sampling_threads() == []

