"""Read runs from a local SQLite MLflow store with SQL: one query each for runs, tags, params
and latest metrics, straight into Polars.

MLflow's own ``search_runs`` builds a ``Run`` object per run (and pandas turns every param into a
string column); reading the five tables it reads (``experiments``, ``runs``, ``tags``,
``params``, ``latest_metrics``; ``metrics`` for histories) is much faster at a thousand runs
(``benchmarks/load_runs.py``). The database is opened read-only. Should MLflow change these
tables, the query fails and the ``MlflowClient`` reader is used instead, with a warning.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gatelab.contract import IN_SWEEP, SWEEP_TAG_PREFIX, TAG_PREFIX, Tag
from gatelab.dashboards.store.columns import DType
from gatelab.dashboards.store.raw_runs import (
    HISTORY_SCHEMA,
    KV_SCHEMA,
    METRIC_SCHEMA,
    RUNS_SCHEMA,
    RawRuns,
)

_CHUNK = 500
"""Run ids per ``IN (...)`` list (SQLite caps the number of bound variables)."""


@dataclass
class SqliteStore:
    """A ``sqlite:///`` tracking store read with SQL."""

    uri: str
    path: Path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)

    def read_runs(self, experiment: str | None, sweep: str | None) -> RawRuns:
        try:
            with closing(self._connect()) as conn:
                return _read_runs(conn, experiment, sweep)
        except sqlite3.DatabaseError as err:
            from gatelab.dashboards.store.client_store import ClientStore

            warnings.warn(f"reading {self.path} with SQL failed ({err}); using MlflowClient",
                          stacklevel=2)
            return ClientStore(self.uri).read_runs(experiment, sweep)

    def read_history(self, run_ids: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
        rows: list[tuple[Any, ...]] = []
        keys = list(metrics)
        with closing(self._connect()) as conn:
            for i in range(0, len(run_ids), _CHUNK):
                chunk = list(run_ids[i:i + _CHUNK])
                rows += conn.execute(
                    "SELECT run_uuid, key, step, CASE WHEN is_nan THEN NULL ELSE value END, "
                    f"timestamp FROM metrics WHERE key IN ({_marks(keys)}) "
                    f"AND run_uuid IN ({_marks(chunk)})", [*keys, *chunk]).fetchall()
        frame = pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")
        return frame.with_columns(pl.col("value").fill_null(float("nan")))


    def read_experiment_tags(self, experiment: str) -> dict[str, str]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT t.key, t.value FROM experiment_tags t JOIN experiments e "
                "ON e.experiment_id = t.experiment_id WHERE e.name = ?", [experiment]).fetchall()
        return {str(k): str(v) for k, v in rows}


_ROWS_PER_PART = 20_000
"""Rows fetched and turned into Polars at a time: at 10,000 runs the params alone are ~540,000
rows, and holding them all as Python tuples before the frame is built was ~15% slower."""


def _frame(cursor: sqlite3.Cursor, schema: dict[str, DType]) -> pl.DataFrame:
    parts = []
    while rows := cursor.fetchmany(_ROWS_PER_PART):
        parts.append(pl.DataFrame(rows, schema=schema, orient="row"))
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts, rechunk=True)


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _read_runs(conn: sqlite3.Connection, experiment: str | None, sweep: str | None) -> RawRuns:
    where = ["r.lifecycle_stage = 'active'",
             "r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ?)",
             "r.run_uuid NOT IN (SELECT run_uuid FROM tags WHERE key = ?)"]
    args: list[object] = [Tag.RUN_HASH.value, Tag.SUMMARY.value]
    if experiment is not None:
        where.append("e.name = ?")
        args.append(experiment)
    if sweep is not None:
        where.append("r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)")
        args += [SWEEP_TAG_PREFIX + sweep, IN_SWEEP]
    selected = ("SELECT r.run_uuid AS run_uuid, r.name AS name, e.name AS experiment, "
                "r.status AS status, r.start_time AS start_time, r.end_time AS end_time "
                "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                f"WHERE {' AND '.join(where)}")
    with_sel = f"WITH sel AS ({selected}) "

    def query(sql: str, schema: dict[str, DType]) -> pl.DataFrame:
        return _frame(conn.execute(with_sel + sql, args), schema)

    runs = query("SELECT run_uuid, name, experiment, status, start_time, end_time FROM sel",
                 RUNS_SCHEMA)
    tags = query("SELECT t.run_uuid, t.key, t.value FROM tags t JOIN sel USING (run_uuid) "
                 f"WHERE t.key LIKE '{TAG_PREFIX}%'", KV_SCHEMA)
    params = query("SELECT p.run_uuid, p.key, p.value FROM params p JOIN sel USING (run_uuid)",
                   KV_SCHEMA)
    metrics = query("SELECT m.run_uuid, m.key, CASE WHEN m.is_nan THEN NULL ELSE m.value END "
                    "FROM latest_metrics m JOIN sel USING (run_uuid)", METRIC_SCHEMA)
    metrics = metrics.with_columns(pl.col("value").fill_null(float("nan")))
    return RawRuns(runs, tags, params, metrics)
