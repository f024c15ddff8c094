"""The shipped ``smoke`` sweep, shortened to 20 steps per run (its variants, seeds and recipe
read from the repository's sweeps.yaml), recorded by ``gatelab sweep`` in a subprocess for the
end-to-end tests; and the Chromium that drives the browser tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHORT = {"steps": 20, "eval_every": 10, "checkpoint_every": 10, "warmup_steps": 3,
         "batch_size": 8, "seq_len": 64, "eval_batches": 2, "measure_batches": 1}


def short_smoke() -> dict[str, Any]:
    """``smoke`` as shipped, with ``SHORT`` over its overrides and one CPU per run."""
    smoke = dict(yaml.safe_load((REPO / "sweeps.yaml").read_text())["smoke"])
    smoke["overrides"] = {**smoke.get("overrides", {}), **SHORT}
    smoke["resources"] = {"cpus": 1}
    return smoke


@dataclass
class RealSweep:
    uri: str
    folder: Path
    name: str = "smoke"


def record_sweep(folder: Path) -> RealSweep:
    """Run the short ``smoke`` into ``folder/mlflow.db`` (Ray started in the subprocess)."""
    (folder / "sweeps.yaml").write_text(yaml.safe_dump({"smoke": short_smoke()}))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "gatelab", "sweep", "smoke", "--sweeps", str(folder / "sweeps.yaml"),
         "--tracking-uri", uri, "--work-dir", str(folder / "work"), "--no-progress"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return RealSweep(uri, folder)
