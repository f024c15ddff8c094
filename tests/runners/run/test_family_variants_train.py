"""Every SwitchHead and sink-mitigation variant trains 20 steps at the tiny size end to end
(the built-in corpus, MLflow, the measurements on the explicit path) and records finite
numbers: f_attn below 1 and a gate score where a router scores experts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.registry.loader import load_all
from gatelab.registry.schema import Family
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.train import train

SHORT = {"steps": 20, "eval_every": 20, "checkpoint_every": 20, "warmup_steps": 2,
         "batch_size": 4, "seq_len": 32, "eval_batches": 1, "measure_batches": 1,
         "long_context": [1]}
VARIANTS = sorted(s.id for s in load_all()
                  if s.family in (Family.SWITCH_HEAD, Family.SINK_MITIGATIONS))


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir")  # a copy of the corpus's data cache
def test_each_new_variant_finishes_20_steps(tmp_path: Path) -> None:
    assert len(VARIANTS) >= 11
    res = Resources(threads=1, tracking_uri=f"sqlite:///{tmp_path / 'runs'}.db",
                    work_dir=tmp_path / "work", experiment="test")
    client = MlflowClient(res.tracking_uri)
    specs = {s.id: s for s in load_all()}
    for variant in VARIANTS:
        result = train(specs[variant], load_recipe("tiny", SHORT), res)
        assert result.status == "finished", variant
        metrics = client.get_run(result.run_id).data.metrics
        for key in ("val_loss", "f_attn", "m_act", "train_time_s"):
            assert math.isfinite(metrics[key]), (variant, key)
        assert 0 <= metrics["f_attn"] < 1, variant
        assert metrics["val_loss"] < math.log(4096) + 1, variant
        if specs[variant].architecture.switch_head is not None:
            assert 0 < metrics["gate_score.mean"] < 1, variant
