"""The ``sink-onset`` sweep at a reduced size on CPU: one run per variant, the per-head sink
metrics at log-spaced steps of the one run, and the report's sink-onset table from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep import REPO, ray_env

from gatelab.dashboards import load
from gatelab.runners.run.schedule import eval_steps

pytestmark = pytest.mark.slow

REDUCED = ["overrides.size=tiny", "overrides.steps=40", "overrides.batch_size=4",
           "overrides.seq_len=64", "overrides.warmup_steps=4", "overrides.data.source=wiki",
           "overrides.data.vocab_size=2048", "overrides.eval_points=8",
           "overrides.eval_batches=2", "overrides.measure_batch_size=2",
           "overrides.checkpoint_every=20", "resources.cpus=1", "resources.gpus=0"]


@pytest.mark.usefixtures("mlflow_uri")  # a copy of the migrated empty store
def test_sink_onset_watches_one_run_per_variant_at_log_spaced_steps(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "gatelab", "sweep", "sink-onset", "--sweeps",
            str(REPO / "sweeps.yaml"), "--tracking-uri", uri, "--work-dir",
            str(tmp_path / "work"), "--no-progress"]
    for item in REDUCED:
        args += ["--set", item]
    result = subprocess.run(args, cwd=tmp_path, env=ray_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "overrides from the command line" in result.stderr

    runs = load("sink-onset", tracking_uri=uri)
    assert sorted(runs.frame["variant"].to_list()) == ["baseline", "g1-elementwise"]
    history = runs.history(["sink_head_max.layer00", "sink_heads_frac.layer00"])
    expected = sorted(eval_steps(40, 100, 8))
    for (variant,), points in history.group_by(["variant"]):
        for (metric,), one in points.group_by(["metric"]):
            assert sorted(one["step"].unique().to_list()) == expected, (variant, metric)
    onset = runs.sink_onset()
    assert onset.height == 2 and set(onset["evaluations"].to_list()) == {len(expected)}
    assert all(0 < s <= 1 for s in onset["largest_share"].to_list())
