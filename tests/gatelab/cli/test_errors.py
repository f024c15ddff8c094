"""One line for every error (issue 25): each case of bad input a careful new user tried ends in
a non-zero exit and exactly one line on stderr that names the bad file, URI, flag or field, with
no traceback, and writes nothing. The cases run in-process through ``main`` (a fresh folder as
the current one, no ``$MLFLOW_TRACKING_URI``); two also run as ``python -m gatelab``, as a user
runs them, one of them against an address where nothing listens (answered in seconds, not
after MLflow's minutes of retries)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatelab.cli.main import main
from gatelab.tracking_store import PROBE_TIMEOUT_S

CORRUPT = "corrupt.db"
"""A file that is no SQLite database (``file is not a database``)."""
FOREIGN = "foreign.db"
"""A SQLite database that is not an MLflow store."""
A_FILE = "a-file.txt"
"""A plain file, where a folder is wanted."""
AN_EXISTING_FOLDER = "a-folder"
UNCREATABLE = f"{A_FILE}/inside"
"""A path below a file: it cannot be created."""
MY_SPEC = "ablations/my-gate.yaml"
"""A spec file the user already wrote."""


def _free_port() -> int:
    """A loopback port nothing listens on (bound once and let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


PORT = _free_port()
"""The same for every case: ``{port}`` in a case's arguments."""


@dataclass(frozen=True)
class Case:
    """One bad invocation and what its line must name."""

    args: tuple[str, ...]
    names: str
    """Text the error line must hold: the bad value or the flag it came with."""


CASES: dict[str, Case] = {
    "report on a corrupt SQLite file": Case(
        ("report", "t", "--tracking-uri", f"sqlite:///{CORRUPT}"),
        f"{CORRUPT} is not an SQLite database (file is not a database)"),
    "compare on a corrupt SQLite file": Case(
        ("compare", "g1-elementwise", "baseline", "--tracking-uri", f"sqlite:///{CORRUPT}"),
        f"{CORRUPT} is not an SQLite database"),
    "ui on a corrupt SQLite file": Case(
        ("ui", "--tracking-uri", f"sqlite:///{CORRUPT}", "--port", "{port}"),
        f"{CORRUPT} is not an SQLite database"),
    "report on a SQLite file that is not an MLflow store": Case(
        ("report", "t", "--tracking-uri", f"sqlite:///{FOREIGN}"),
        f"{FOREIGN} is an SQLite database but not an MLflow store"),
    "report on a store that does not exist": Case(
        ("report", "t", "--tracking-uri", "sqlite:///none.db"), "no MLflow store at none.db"),
    "report where nothing listens": Case(
        ("report", "t", "--tracking-uri", "http://127.0.0.1:{port}"),
        "http://127.0.0.1:{port} is unreachable (--tracking-uri"),
    "report on MLflow's file store": Case(
        ("report", "t", "--tracking-uri", "file:///tmp/mlruns"),
        "--tracking-uri file:///tmp/mlruns: MLflow's file store"),
    "report on a bare path": Case(
        ("report", "t", "--tracking-uri", "mlflow.db"), "pass sqlite:///PATH/mlflow.db"),
    "report on a PostgreSQL URI": Case(
        ("report", "t", "--tracking-uri", "postgresql://me@127.0.0.1:{port}/runs"),
        "postgresql://me@127.0.0.1:{port}/runs"),
    "report on an unknown scheme": Case(
        ("report", "t", "--tracking-uri", "foo://bar"), "unknown scheme 'foo'"),
    "report on an empty URI": Case(
        ("report", "t", "--tracking-uri", ""), "--tracking-uri is empty"),
    "train with an unclosed bracket in --set": Case(
        ("train", "baseline", "--set", "steps=[0,1"), "--set steps=[0,1: '[0,1' is not a YAML"),
    "train with an unclosed quote in --set": Case(
        ("train", "baseline", "--set", "data.source='my.txt"), "--set data.source='my.txt"),
    "sweep with an unclosed bracket in --set": Case(
        ("sweep", "smoke", "--dry-run", "--set", "seeds=[0,1"), "--set seeds=[0,1: smoke:"),
    "sweep with an unknown field in --set": Case(
        ("sweep", "smoke", "--dry-run", "--set", "nonsense.x=1"),
        "--set nonsense.x=1: smoke.nonsense: unknown field"),
    "new with an unclosed bracket in --set": Case(
        ("new", "my-new", "--from", "baseline", "--set", "gate=[G1"), "--set gate=[G1"),
    "new with a 300-character name": Case(
        ("new", "a" * 300, "--from", "baseline"), f"NAME {'a' * 20}... is 300 characters"),
    "new over an existing file": Case(
        ("new", "my-gate", "--from", "baseline"), f"{MY_SPEC} exists"),
    "new with a shipped id": Case(
        ("new", "g1-headwise", "--from", "g1-elementwise"),
        "NAME 'g1-headwise' is already a variant's id"),
    "new with --out on a file": Case(
        ("new", "my-new", "--from", "baseline", "--out", A_FILE), f"--out {A_FILE} is a file"),
    "server --store on a file": Case(
        ("server", "--store", A_FILE, "--port", "{port}"), f"--store {A_FILE} is a file"),
    "server --store that cannot be created": Case(
        ("server", "--store", UNCREATABLE, "--port", "{port}"),
        f"--store {UNCREATABLE} cannot be created"),
    "report with --experiment ''": Case(
        ("report", "t", "--experiment", ""), "--experiment ''"),
    "sweep with --experiment ''": Case(
        ("sweep", "smoke", "--dry-run", "--experiment", ""), "--experiment ''"),
    "train with --work-dir on a file": Case(
        ("train", "baseline", "--work-dir", A_FILE), f"--work-dir {A_FILE} is a file"),
    "sweep with --work-dir that cannot be created": Case(
        ("sweep", "smoke", "--dry-run", "--work-dir", UNCREATABLE),
        f"--work-dir {UNCREATABLE} cannot be created"),
    "compare with --out on a folder": Case(
        ("compare", "g1-elementwise", "baseline", "--out", AN_EXISTING_FOLDER),
        f"--out {AN_EXISTING_FOLDER} is a folder"),
    "report with --out that cannot be created": Case(
        ("report", "t", "--out", UNCREATABLE), f"--out {UNCREATABLE} cannot be created"),
}
"""Every case of issue 25's "one line for every error", by what the user tried."""


def _scratch(folder: Path) -> None:
    """The files the cases trip over."""
    (folder / CORRUPT).write_bytes(b"this is not a database\n" * 64)
    with sqlite3.connect(folder / FOREIGN) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    (folder / A_FILE).write_text("a file\n")
    (folder / AN_EXISTING_FOLDER).mkdir()
    (folder / MY_SPEC).parent.mkdir()
    (folder / MY_SPEC).write_text("base: baseline\ndescription: mine\nhypothesis: mine\n")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder``, with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


@pytest.fixture()
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current folder holding the files the cases need, and no tracking URI or
    gatelab folders from the environment."""
    for name in ("MLFLOW_TRACKING_URI", "GATELAB_ABLATIONS", "GATELAB_SWEEPS", "GATELAB_DEBUG",
                 "GATELAB_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    _scratch(tmp_path)
    return tmp_path


def _assert_one_line(code: int, err: str, names: str) -> str:
    lines = err.splitlines()
    assert code != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert names in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_every_error_is_one_line_naming_the_value_and_nothing_is_written(
        case: Case, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(scratch)
    args = [a.replace("{port}", str(PORT)) for a in case.args]
    started = time.monotonic()
    code = main(args)
    elapsed = time.monotonic() - started
    line = _assert_one_line(code, capsys.readouterr().err, case.names.replace("{port}",
                                                                             str(PORT)))
    assert line.startswith(f"gatelab {args[0]}: ")
    assert _snapshot(scratch) == before
    assert elapsed < PROBE_TIMEOUT_S + 30.0  # no minutes of retries (imports on a busy CPU)


@pytest.mark.parametrize("case", ["report where nothing listens",
                                  "report on a corrupt SQLite file"])
def test_the_installed_command_says_it_in_one_line_within_seconds(case: str,
                                                                  scratch: Path) -> None:
    args = [a.replace("{port}", str(PORT)) for a in CASES[case].args]
    before = _snapshot(scratch)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gatelab", *args], cwd=scratch,
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    elapsed = time.monotonic() - started
    _assert_one_line(done.returncode, done.stderr, CASES[case].names.replace("{port}",
                                                                            str(PORT)))
    assert done.stdout == ""
    assert _snapshot(scratch) == before
    assert elapsed < 60.0  # MLflow alone retried for 254 s before the check


def test_the_probe_of_an_address_answers_within_its_timeout() -> None:
    """The check itself, without a command's imports: refused at once, well inside the
    bound."""
    from gatelab.tracking_store import StoreError, StoreUse, check_store

    started = time.monotonic()
    with pytest.raises(StoreError, match="connection refused"):
        check_store(f"http://127.0.0.1:{PORT}", StoreUse.READ)
    assert time.monotonic() - started < PROBE_TIMEOUT_S


def test_an_unexpected_error_is_one_line_too(scratch: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A bug below a command: one line naming the exception and how to see its traceback,
    with its own exit code."""
    from gatelab.cli import list_variants
    from gatelab.cli.main import DEBUG_ENV, ExitCode

    def broken(args: object) -> int:
        raise TypeError("something\nbelow")

    monkeypatch.setattr(list_variants, "run", broken)
    code = main(["list"])
    line = _assert_one_line(code, capsys.readouterr().err, "unexpected TypeError: something; "
                                                           "below")
    assert code == ExitCode.INTERNAL and f"{DEBUG_ENV}=1" in line
