"""Where recorded runs are read from: the tracking URI, the raw long tables every reader
returns, and the choice of reader.

Two readers return the same ``RawRuns``: ``SqliteStore`` reads a local ``sqlite:///`` store's
tables directly with SQL (fast: one query per table), ``ClientStore`` goes through
``MlflowClient`` (any store, e.g. an ``http://`` server). ``open_store`` picks the first for
SQLite and the second otherwise; ``docs/dashboards.md`` has the measurements behind that.
Before either, the URI is checked (``gatelab.tracking_store``): a missing, corrupt or foreign
SQLite file, a server that does not answer within seconds and an unsupported scheme are each
refused with one line that names the URI and the fix.
A training run is one with a ``gatelab.run_hash`` tag and no ``gatelab.summary`` tag.
"""

from __future__ import annotations

from typing import Literal

from gatelab.contract import sqlite_path
from gatelab.dashboards.store.client_store import ClientStore
from gatelab.dashboards.store.raw_runs import RunStore
from gatelab.dashboards.store.sqlite_store import SqliteStore
from gatelab.tracking_store import StoreUse, check_store

Backend = Literal["auto", "sql", "client"]

def open_store(uri: str | None = None, backend: Backend = "auto") -> RunStore:
    """The reader for ``uri`` (resolved as ``resolve_tracking_uri`` does, and checked by
    ``check_store``: ``StoreError`` when it names no usable store, ``NoStore``, a
    ``FileNotFoundError`` too, when its SQLite file is missing): SQL for a SQLite file unless
    ``backend="client"``, ``MlflowClient`` otherwise."""
    resolved = check_store(uri, StoreUse.READ)
    path = sqlite_path(resolved)
    if backend == "sql" and path is None:
        raise ValueError(f"the SQL reader needs a sqlite:/// tracking URI, got {resolved}")
    if backend != "client" and path is not None:
        return SqliteStore(resolved, path)
    return ClientStore(resolved)
