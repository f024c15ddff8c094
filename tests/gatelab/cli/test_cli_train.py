"""`gatelab train` as a user runs it: a summary at the end, divergence as a result, clear
errors for bad input, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHORT = ["--steps", "20", "--batch-size", "8", "--seq-len", "64", "--set", "eval_every=10",
         "--set", "eval_batches=2", "--set", "measure_batches=1", "--set", "warmup_steps=3"]


def train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatelab", "train", "--threads", "1",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--work-dir",
         str(tmp_path / "work"), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_train_prints_every_measurement(tmp_path: Path) -> None:
    result = train(tmp_path, "g1-elementwise", *SHORT)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("g1-elementwise: finished")
    for label in ("validation loss", "bits per byte", "loss at 4x train length", "f_attn",
                  "m_act", "mean gate score", "loss spikes", "max gradient norm",
                  "throughput (tokens/s)"):
        assert label in out, label
    assert "20/20" in result.stderr  # the progress bar reached the end
    again = train(tmp_path, "g1-elementwise", *SHORT)
    assert "already recorded for this hash; nothing trained" in again.stdout


@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_an_absurd_learning_rate_is_reported_as_diverged(tmp_path: Path) -> None:
    result = train(tmp_path, "baseline", *SHORT, "--lr", "10")
    assert result.returncode == 0
    assert "baseline: diverged at step" in result.stdout
    assert "Traceback" not in result.stderr


def test_bad_input_gives_one_clear_line(tmp_path: Path) -> None:
    missing = train(tmp_path, "baseline", *SHORT, "--set", "data.source=/no/such/corpus.txt")
    assert missing.returncode == 2
    assert "/no/such/corpus.txt does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = train(tmp_path, "g1-elementwize")
    assert unknown.returncode == 2 and "did you mean 'g1-elementwise'" in unknown.stderr
    dense = train(tmp_path, "more-experts", *SHORT)
    assert dense.returncode == 2 and "use an MoE size preset" in dense.stderr
    cuda = train(tmp_path, "baseline", *SHORT, "--device", "cuda")
    import torch

    if not torch.cuda.is_available():
        assert cuda.returncode == 2 and "use --device cpu or auto" in cuda.stderr
        assert "Traceback" not in cuda.stderr
    server = train(tmp_path, "baseline", *SHORT, "--tracking-uri", "http://127.0.0.1:9")
    assert server.returncode == 2 and "http://127.0.0.1:9 is unreachable" in server.stderr
