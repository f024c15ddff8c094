"""A real tiny sweep (two runs of 20 steps, one seed) recorded by ``gatelab sweep`` in a
subprocess, for the end-to-end tests, and the Chromium that drives the browser tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SWEEP = """
e2e:
  description: two tiny runs for the dashboard tests
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {steps: 20, eval_every: 10, checkpoint_every: 10, warmup_steps: 3, batch_size: 8,
              seq_len: 64, eval_batches: 2, measure_batches: 1}
  seeds: [0]
  resources: {cpus: 1}
"""


@dataclass
class RealSweep:
    uri: str
    folder: Path
    name: str = "e2e"


def record_sweep(folder: Path) -> RealSweep:
    """Run the ``e2e`` sweep into ``folder/mlflow.db`` (Ray started in the subprocess)."""
    (folder / "sweeps.yaml").write_text(SWEEP)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "gatelab", "sweep", "e2e", "--sweeps", str(folder / "sweeps.yaml"),
         "--tracking-uri", uri, "--work-dir", str(folder / "work"), "--no-progress"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return RealSweep(uri, folder)
