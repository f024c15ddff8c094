"""Per-run arrays the metrics cannot hold: the ``internals.npz`` artifact a finished run logs
(``gatelab.runners.run.train``): gate-score histograms per layer and attention maps of a few heads.

Read through ``MlflowClient.download_artifacts``, so any tracking store works; a run recorded
before the artifact existed (or a diverged run, which has no final measurements) has none and is
left out. The arrays are described in ``gatelab.runners.run.measurements`` (``Internals.arrays``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatelab.contract import Artifact, InternalsArray


@dataclass(frozen=True)
class RunArrays:
    run_id: str
    gate_hist: np.ndarray
    """(gated layers, bins + 2): counts below 0, per bin of ``hist_edges``, above 1."""
    hist_edges: np.ndarray
    attn_maps: np.ndarray | None
    """(layers, heads, n, n): attention probabilities, rows are queries."""
    f_attn: np.ndarray


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded artifact unless told not to."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def read_arrays(tracking_uri: str, run_ids: Sequence[str]) -> dict[str, RunArrays]:
    """The ``internals.npz`` of each run in ``run_ids`` that has one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found: dict[str, RunArrays] = {}
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        for rid in run_ids:
            try:
                names = {a.path for a in client.list_artifacts(rid)}
                if Artifact.INTERNALS not in names:
                    continue
                local = client.download_artifacts(rid, Artifact.INTERNALS, str(Path(tmp) / rid))
            except (MlflowException, OSError):
                continue
            with np.load(local) as data:
                maps = InternalsArray.ATTN_MAPS
                found[rid] = RunArrays(
                    rid, data[InternalsArray.GATE_HIST], data[InternalsArray.HIST_EDGES],
                    data[maps] if maps in data.files else None, data[InternalsArray.F_ATTN])
    return found
