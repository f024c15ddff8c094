"""Where recorded runs are read from: the tracking URI, the raw long tables every reader
returns, and the choice of reader.

Two readers return the same ``RawRuns``: ``SqliteStore`` reads a local ``sqlite:///`` store's
tables directly with SQL (fast: one query per table), ``ClientStore`` goes through
``MlflowClient`` (any store, e.g. an ``http://`` server). ``open_store`` picks the first for
SQLite and the second otherwise; ``docs/dashboards.md`` has the measurements behind that.
A training run is one with a ``gatelab.run_hash`` tag and no ``gatelab.summary`` tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import polars as pl

from gatelab.contract import resolve_tracking_uri, sqlite_path
from gatelab.dashboards.columns import DType

Backend = Literal["auto", "sql", "client"]

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


def open_store(uri: str | None = None, backend: Backend = "auto") -> RunStore:
    """The reader for ``uri`` (resolved as ``resolve_tracking_uri`` does): SQL for an
    existing SQLite file unless ``backend="client"``, ``MlflowClient`` otherwise."""
    from gatelab.dashboards.client_store import ClientStore
    from gatelab.dashboards.sqlite_store import SqliteStore

    resolved = resolve_tracking_uri(uri)
    path = sqlite_path(resolved)
    if backend == "sql":
        if path is None:
            raise ValueError(f"the SQL reader needs a sqlite:/// tracking URI, got {resolved}")
        return SqliteStore(resolved, path)
    if backend == "auto" and path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"no MLflow store at {path} (tracking URI {resolved})")
        return SqliteStore(resolved, path)
    return ClientStore(resolved)
