"""Whether a tracking URI names a store gatelab can use, answered in seconds and in one line,
before MLflow is imported (MLflow retries a server that is not there for minutes, then ends in a
traceback; it reads a corrupt SQLite file as a traceback too).

Supported: ``sqlite:///PATH`` (the default, ``./mlflow.db``), ``http(s)://HOST[:PORT]`` (an
MLflow tracking server such as ``gatelab server``), the SQL databases MLflow keeps runs in
(``postgresql://``, ``mysql://``, ``mssql://`` and their ``+driver`` forms, with the driver
installed) and ``databricks``. Refused: MLflow's file store (``file:`` or a bare path; MLflow
3.17 keeps it in maintenance mode and refuses it by default), an in-memory SQLite store (it
keeps nothing) and every other scheme.

``check_store`` raises ``StoreError`` naming the URI, where it came from (the flag,
``$MLFLOW_TRACKING_URI`` or the default) and the fix. A store that is read (``StoreUse.READ``:
``report``, ``compare``, ``ui``) must exist; one that is written (``StoreUse.WRITE``: ``train``,
``sweep``, ``server``) may be created, where its folder can be. Nothing is created by a check.
"""

from __future__ import annotations

import enum
import os
import socket
import sqlite3
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from gatelab.contract import resolve_tracking_uri, sqlite_path

PROBE_TIMEOUT_S = 3.0
"""How long a server or database may take to answer the check before it is called unreachable
(seconds)."""

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

SQL_DATABASES = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
"""The SQL databases MLflow keeps runs in (an SQLAlchemy URL's dialect), with the port a URL
without one means."""

SUPPORTED = ("sqlite:///PATH (default ./mlflow.db), http(s)://HOST:PORT (an MLflow server, e.g. "
             "gatelab server), postgresql://, mysql://, mssql:// or databricks")
"""The schemes a message offers instead of a refused one."""

MLFLOW_TABLES = frozenset({"experiments", "runs"})
"""Tables every MLflow SQL store has: a SQLite file without them is someone else's database."""


class StoreUse(enum.Enum):
    """What a command does with the store."""

    READ = "read"
    """It must exist (``report``, ``compare``, ``ui``)."""
    WRITE = "write"
    """It may be created (``train``, ``sweep``, ``server``)."""


class StoreError(ValueError):
    """A tracking URI gatelab cannot use; ``str()`` is one line with the fix."""


class NoStore(StoreError, FileNotFoundError):
    """A store that is read does not exist (a ``FileNotFoundError`` too)."""


def origin_of(uri: str | None, flag: str = "--tracking-uri") -> str:
    """Where the URI ``resolve_tracking_uri(uri)`` returns came from, as a message names it."""
    if uri is not None:
        return flag
    return f"${TRACKING_URI_ENV}" if os.environ.get(TRACKING_URI_ENV) else "the default store"


def check_store(uri: str | None, use: StoreUse, flag: str = "--tracking-uri") -> str:
    """The resolved URI (``resolve_tracking_uri``) once it names a store gatelab can ``use``;
    ``StoreError`` otherwise. ``flag``: how a message names the option ``uri`` came from."""
    if uri is not None and not uri.strip():
        raise StoreError(f"{flag} is empty: pass a store, e.g. {flag} sqlite:///mlflow.db, or "
                         f"leave the flag out for ./mlflow.db")
    resolved = resolve_tracking_uri(uri)
    where = f"{origin_of(uri, flag)} {resolved}"
    scheme = urlsplit(resolved).scheme.lower()
    dialect = scheme.split("+", 1)[0]
    if scheme == "sqlite":
        _check_sqlite(resolved, where, use)
    elif scheme in ("http", "https"):
        _check_server(resolved, where)
    elif dialect in SQL_DATABASES:
        _check_database(resolved, where, dialect)
    elif scheme == "databricks":
        pass  # reached through the Databricks SDK's own configuration
    elif scheme in ("", "file") or len(scheme) == 1:  # a bare path (a drive letter on Windows)
        raise StoreError(f"{where}: MLflow's file store is in maintenance mode and gatelab "
                         "does not use it: pass sqlite:///PATH/mlflow.db (mlflow "
                         "migrate-filestore moves a file store's runs into one)")
    else:
        raise StoreError(f"{where}: unknown scheme {scheme!r}; gatelab records to {SUPPORTED}")
    return resolved


def _check_sqlite(uri: str, where: str, use: StoreUse) -> None:
    path = sqlite_path(uri)
    if path is None:
        raise StoreError(f"{where}: an in-memory SQLite store keeps nothing; pass a file, e.g. "
                         "sqlite:///mlflow.db")
    if path.is_dir():
        raise StoreError(f"{where}: {path} is a folder; pass the database file in it, e.g. "
                         f"sqlite:///{path / 'mlflow.db'}")
    if not path.exists():
        if use is StoreUse.READ:
            raise NoStore(f"no MLflow store at {path} ({where}): run a sweep first, or pass "
                             "--tracking-uri with a store that exists")
        problem = creatable(path)
        if problem:
            raise StoreError(f"{where}: the store cannot be created: {problem}")
        return
    if use is StoreUse.WRITE and path.stat().st_size == 0:
        return  # an empty file is an empty SQLite database: MLflow makes its tables in it
    tables = sqlite_tables(path)
    if isinstance(tables, str):
        raise StoreError(f"{where}: {path} is not an SQLite database ({tables}); pass "
                         "--tracking-uri with an MLflow store, or move the file aside")
    if not MLFLOW_TABLES.issubset(tables):
        raise StoreError(f"{where}: {path} is an SQLite database but not an MLflow store (no "
                         "experiments or runs table); pass --tracking-uri with an MLflow store")


def sqlite_tables(path: Path) -> set[str] | str:
    """The tables of the SQLite database at ``path``, opened read-only; the reason as text when
    it is no SQLite database (``file is not a database``) or cannot be read."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as err:
        return str(err)
    return {str(name) for (name,) in rows}


def creatable(path: Path) -> str | None:
    """Why ``path`` (a file or folder that does not exist yet) could not be created; ``None``
    when it could: its nearest existing ancestor must be a folder this process may write."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"no permission to write in {ancestor}"
    return None


def _check_server(uri: str, where: str) -> None:
    """Something must answer HTTP at ``uri`` within ``PROBE_TIMEOUT_S`` (any status: a server
    behind authentication answers 401)."""
    parts = urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    opener = (urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback
              else urllib.request.build_opener())
    try:
        with opener.open(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(f"the MLflow tracking server {uri} is unreachable ({where}: "
                         f"{_reason(reason)}); start it (gatelab server --port N) or check the "
                         "address") from None


def _check_database(uri: str, where: str, dialect: str) -> None:
    """The driver SQLAlchemy uses for ``uri`` is installed and the database's port answers."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except ImportError as err:
        module = err.name or str(err)
        raise StoreError(f"{where}: MLflow reaches {dialect} through the Python module "
                         f"{module}, which is not installed: install it (pip install "
                         f"{module}) or pass another --tracking-uri") from None
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise StoreError(f"{where}: not a database URL SQLAlchemy reads ({err})") from None
    host, port = url.host or "localhost", url.port or SQL_DATABASES[dialect]
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise StoreError(f"the database at {host}:{port} is unreachable ({where}: "
                         f"{_reason(err)}); start it or check the address") from None


def _reason(err: object) -> str:
    """A connection error as a few words (``connection refused``, ``no answer within 3 s``)."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err).splitlines()[0] if str(err) else type(err).__name__
