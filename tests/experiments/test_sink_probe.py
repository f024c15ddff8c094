"""The sink probe (experiments/sink_probe.py) trains through the runner's per-evaluation hook,
measures and writes its records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_sink_probe_writes_per_layer_attention_shares(tmp_path: Path) -> None:
    out = tmp_path / "probe.jsonl"
    cmd = [sys.executable, "experiments/sink_probe.py", "--out", str(out), "--steps", "6",
           "--every", "3", "--layers", "2", "--d-model", "32", "--heads", "2", "--kv-heads", "1",
           "--head-dim", "16", "--ffn", "64", "--seq-len", "32", "--batch", "4",
           "--warmup", "2", "--device", "cpu", "--tracking-uri",
           f"sqlite:///{tmp_path / 'mlflow.db'}", "--work-dir", str(tmp_path / "work")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header, *records = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["params"] > 0 and header["args"]["windows"] == "document"
    assert [r["step"] for r in records] == [3, 6]
    for r in records:
        assert len(r["f"]) == len(r["fmaxhead"]) == len(r["eot"]) == 2
        for f, top, eot in zip(r["f"], r["fmaxhead"], r["eot"], strict=True):
            assert 0 < f <= top <= 1
            # document windows open on the end-of-text token, so key 0 is one of the EOT keys
            assert eot >= f - 1e-3
        assert r["val"] > 0 and r["train"] > 0
    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name(
            "sink-probe").experiment_id])
    assert [r.data.tags["gatelab.status"] for r in runs] == ["finished"]
