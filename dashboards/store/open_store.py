"""Where recorded runs are read from: the tracking URI, the raw long tables every reader
returns, and the choice of reader.

Two readers return the same ``RawRuns``: ``SqliteStore`` reads a local ``sqlite:///`` store's
tables directly with SQL (fast: one query per table), ``ClientStore`` goes through
``MlflowClient`` (any store, e.g. an ``http://`` server). ``open_store`` picks the first for
SQLite and the second otherwise; ``docs/dashboards.md`` has the measurements behind that.
A training run is one with a ``gatelab.run_hash`` tag and no ``gatelab.summary`` tag.
"""

from __future__ import annotations

from typing import Literal

from gatelab.contract import resolve_tracking_uri, sqlite_path
from gatelab.dashboards.store.client_store import ClientStore
from gatelab.dashboards.store.raw_runs import RunStore
from gatelab.dashboards.store.sqlite_store import SqliteStore

Backend = Literal["auto", "sql", "client"]

def open_store(uri: str | None = None, backend: Backend = "auto") -> RunStore:
    """The reader for ``uri`` (resolved as ``resolve_tracking_uri`` does): SQL for an
    existing SQLite file unless ``backend="client"``, ``MlflowClient`` otherwise."""
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
