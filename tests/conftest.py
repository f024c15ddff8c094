"""Suite-wide guards: nothing may reach the network (only loopback), and runs stay small. And
what the suite builds once per run (``built_once.py``): a test that trains on the built-in
corpus asks for ``work_dir`` (its data cache already there), one that records runs for
``mlflow_uri`` (a migrated empty store), each a copy of its own; a helper that is not a fixture
calls ``built_once.this_run()``."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from built_once import ROOT_ENV, BuiltOnce

_real_connect = socket.socket.connect


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only "localhost" counts
        return host == "localhost"


def _loopback_only(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else None
    inet = self.family in (socket.AF_INET, socket.AF_INET6)
    if host is not None and inet and not _is_loopback(str(host)):
        raise OSError(f"tests may not reach the network: connect to {host!r} blocked")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def no_network() -> Iterator[None]:
    """Block every non-loopback connection of this process for the whole session."""
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltOnce]:
    """The run's shared builds: in the run's temporary folder, which every xdist worker's own
    temporary folder sits in; named in ``$GATELAB_TESTS_BUILT_ONCE`` for ``this_run()``."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    os.environ[ROOT_ENV] = str(root)
    yield BuiltOnce(root)
    os.environ.pop(ROOT_ENV, None)


@pytest.fixture()
def work_dir(tmp_path: Path, built_once: BuiltOnce) -> Path:
    """``tmp_path/work``, a run's work dir, holding a copy of the built-in corpus's data cache
    (the ``tiny`` recipe's tokenizer and token ids)."""
    work = tmp_path / "work"
    built_once.data_cache(work / "cache")
    return work


@pytest.fixture()
def mlflow_uri(tmp_path: Path, built_once: BuiltOnce) -> str:
    """A migrated empty MLflow store of this test's own, ``tmp_path/mlflow.db``."""
    return built_once.mlflow_store(tmp_path / "mlflow.db")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, where ``--dist loadfile`` (pyproject's addopts) runs each file on one
    worker (so a file's module- or session-scoped fixture is built once per run), files go out
    in the order of how many slow tests they hold, most first: the long end-to-end files start
    early and the short ones fill in, so that no worker finishes a long file alone at the end.
    A run in one process keeps the files' order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each file's own order is kept
