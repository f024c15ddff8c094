"""Fixtures: a real SQLite MLflow store filled with synthetic runs (``synthetic.fill_store``);
for the slow tests, a real tiny sweep recorded by ``gatelab sweep`` and headless Chromium. Each
store starts as a copy of the run's migrated empty one (``built_once.py``), the sweep with a copy
of the built-in corpus's data cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from built_once import BuiltOnce
from real_sweep import CHROMIUM, CHROMIUM_ARGS, RealSweep, record_sweep
from synthetic import Store, fill_store

logging.getLogger("mlflow").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory, built_once: BuiltOnce) -> Store:
    """Filled once per session; tests must not change it (write to ``fresh_store``)."""
    folder = tmp_path_factory.mktemp("store")
    built_once.mlflow_store(folder / "mlflow.db")
    return fill_store(folder)


@pytest.fixture()
def fresh_store(tmp_path: Path, built_once: BuiltOnce) -> Store:
    built_once.mlflow_store(tmp_path / "mlflow.db")
    return fill_store(tmp_path)


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory, built_once: BuiltOnce) -> RealSweep:
    """The shipped ``smoke`` sweep at 20 steps per run, recorded by ``gatelab sweep``."""
    folder = tmp_path_factory.mktemp("sweep")
    built_once.mlflow_store(folder / "mlflow.db")
    built_once.data_cache(folder / "work" / "cache")
    return record_sweep(folder)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
