"""Runs as a store holds them: the long tables every reader returns (``RawRuns``) and the
reader protocol (``RunStore``). The readers: ``sqlite_store.py`` and ``client_store.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import polars as pl

from gatelab.dashboards.store.columns import DType

RUNS_SCHEMA: dict[str, DType] = {
    "run_id": pl.Utf8, "run_name": pl.Utf8, "experiment": pl.Utf8, "mlflow_status": pl.Utf8,
    "start_time": pl.Int64, "end_time": pl.Int64,
}
"""``RawRuns.runs``: one row per run; times in milliseconds since the epoch."""
KV_SCHEMA: dict[str, DType] = {"run_id": pl.Utf8, "key": pl.Utf8,
                                           "value": pl.Utf8}
"""``RawRuns.tags`` and ``RawRuns.params``: one row per (run, key)."""
METRIC_SCHEMA: dict[str, DType] = {"run_id": pl.Utf8, "key": pl.Utf8,
                                               "value": pl.Float64}
"""``RawRuns.metrics``: the latest value of each (run, metric)."""
HISTORY_SCHEMA: dict[str, DType] = {
    "run_id": pl.Utf8, "metric": pl.Utf8, "step": pl.Int64, "value": pl.Float64,
    "timestamp": pl.Int64,
}
"""A metric history: every logged point."""


@dataclass(frozen=True)
class RawRuns:
    """Runs as the store holds them: string tags and params, float metrics, in long form."""

    runs: pl.DataFrame
    tags: pl.DataFrame
    params: pl.DataFrame
    metrics: pl.DataFrame

    @staticmethod
    def empty() -> RawRuns:
        return RawRuns(pl.DataFrame(schema=RUNS_SCHEMA), pl.DataFrame(schema=KV_SCHEMA),
                       pl.DataFrame(schema=KV_SCHEMA), pl.DataFrame(schema=METRIC_SCHEMA))


class RunStore(Protocol):
    """Reads training runs and metric histories from one tracking store."""

    uri: str

    def read_runs(self, experiment: str | None, sweep: str | None) -> RawRuns:
        """Training runs of ``experiment`` (``None``: every experiment) tagged
        ``gatelab.sweep.<sweep>`` (``None``: every run)."""
        ...

    def read_history(self, run_ids: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
        """Every logged point of ``metrics`` for ``run_ids`` (``HISTORY_SCHEMA``)."""
        ...

    def read_experiment_tags(self, experiment: str) -> dict[str, str]:
        """The tags of ``experiment`` (empty when it does not exist)."""
        ...
