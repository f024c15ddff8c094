"""What the suite builds once per test run and copies into each test that needs its own: the
built-in corpus's tokenizer and token ids (a data cache, ~10 s to build on 2 cores) and an empty
MLflow SQLite store with every migration applied (~3 s). A test gets copies, never the built
files themselves, so nothing a test writes reaches another test.

Each is built by the first process of the run that asks for it (under pytest-xdist every worker
may ask; a file lock in the run's shared temporary folder makes the others wait, then reuse it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WIKI_VOCAB = 4096
"""The vocabulary of the ``tiny`` recipe's BPE on the built-in corpus (``data.vocab_size``)."""
ROOT_ENV = "GATELAB_TESTS_BUILT_ONCE"
"""Names the run's folder of builds (set by ``tests/conftest.py`` when the session starts)."""


@dataclass(frozen=True)
class BuiltOnce:
    """The folder of one test run's shared builds, and copies out of it."""

    root: Path
    """Shared by every process of the run; written only here, under its lock."""

    def data_cache(self, into: Path, vocab_size: int = WIKI_VOCAB) -> Path:
        """Copy the built-in corpus's tokenizer and token ids (BPE of ``vocab_size``) into
        ``into``, a run's cache folder (``WORK_DIR/cache``, or ``STORAGE/cache`` with
        ``--storage``), so the run finds them cached; ``into``."""
        built = self._once(f"wiki-bpe{vocab_size}", lambda folder: _build_data(folder, vocab_size))
        shutil.copytree(built, into, dirs_exist_ok=True)
        return into

    def mlflow_store(self, path: Path) -> str:
        """Copy the migrated empty store to ``path`` (a ``.db`` file); its tracking URI. Its
        Default experiment keeps its artifacts beside the copy (``mlruns/0``), as a store
        created in that folder would."""
        built = self._once("mlflow", _build_store)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built / "mlflow.db", path)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (str(path.parent / "mlruns" / "0"),))
        db.close()
        return f"sqlite:///{path}"

    def _once(self, name: str, build: Callable[[Path], None]) -> Path:
        """``root/name``, built by ``build`` into a fresh folder the first time it is asked for
        (in any process of the run), then moved into place whole."""
        done = self.root / name
        if done.is_dir():
            return done
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.is_dir():
                building = self.root / f"{name}.building"
                shutil.rmtree(building, ignore_errors=True)
                building.mkdir()
                build(building)
                os.replace(building, done)
        return done


def _build_data(folder: Path, vocab_size: int) -> None:
    from gatelab.runners.data.tokens import DataConfig, prepare_data

    prepare_data(DataConfig(vocab_size=vocab_size, cache_dir=str(folder), progress=False))


def _build_store(folder: Path) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()


def this_run() -> BuiltOnce:
    """The run's builds, for a test helper that is not a fixture (a fixture asks for
    ``built_once``)."""
    root = os.environ.get(ROOT_ENV)
    assert root, f"${ROOT_ENV} is unset: tests/conftest.py sets it when the session starts"
    return BuiltOnce(Path(root))
