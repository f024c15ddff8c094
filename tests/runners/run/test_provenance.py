"""A run's code version holds without ``.git``: the commit passed from the submitting checkout,
and a content hash of the installed package that changes with its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.runners.run import provenance


def test_outside_a_checkout_the_commit_comes_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    assert provenance.git_state(tmp_path) == ("unknown", None)
    monkeypatch.setenv(provenance.COMMIT_ENV, "abc123")
    assert provenance.git_state(tmp_path) == ("abc123", None)
    commit, dirty = provenance.git_state()  # this checkout: git tells, the variable does not
    assert commit != "abc123" and len(commit) == 40 and dirty in (True, False)


def test_the_repository_is_the_checkout_root_not_a_package_folder() -> None:
    root = Path(__file__).resolve().parents[3]
    assert root == provenance.REPO
    assert (provenance.REPO / "pyproject.toml").is_file()


def test_the_code_hash_changes_with_any_source_file_and_only_with_them(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.yaml").write_text("k: v\n")
    roots = {"pkg": tmp_path / "pkg"}
    first = provenance.tree_hash(roots)
    (tmp_path / "pkg" / "notes.pyc").write_bytes(b"compiled")  # not source: same hash
    assert provenance.tree_hash(roots) == first
    (tmp_path / "pkg" / "sub" / "b.yaml").write_text("k: w\n")
    assert provenance.tree_hash(roots) != first
    (tmp_path / "pkg" / "sub" / "b.yaml").write_text("k: v\n")
    assert provenance.tree_hash(roots) == first
    assert provenance.tree_hash({"other": tmp_path / "pkg"}) != first  # paths are hashed
    digest = provenance.code_hash()  # the installed package's
    assert len(digest) == 64 and digest == provenance.code_hash()


def test_naming_the_node_never_imports_ray() -> None:
    """A run outside Ray names its host, and leaves Ray unimported: importing it would fix its
    network mode before a sweep in the same process could keep it on loopback."""
    import subprocess
    import sys

    code = ("import sys, socket; from gatelab.runners.run.provenance import node_name; "
            "assert node_name() == socket.gethostname(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_the_code_hash_reads_the_subpackages_without_importing_them() -> None:
    """A run's worker hashes the code without importing ``gatelab.dashboards`` (which would
    import scipy's statistics for nothing: seconds on every worker's first run); the hash
    covers the dashboards' files all the same."""
    import subprocess
    import sys

    code = ("import sys; from gatelab.runners.run.provenance import code_hash; h = code_hash(); "
            "print(len(h), 'gatelab.dashboards' in sys.modules, 'gatelab.dashboards.runs' in "
            "sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["64", "False", "False"]
