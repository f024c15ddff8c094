"""The code stays ruff-clean and type-checks (mypy, configured in pyproject.toml; its cache in
the repository's ``.mypy_cache``, kept between runs: mypy reuses a module's entry while the
module's content is unchanged, so a rerun checks only what changed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"registry": "registry", "model": "model", "runners": "runners",
          "dashboards": "dashboards", "ablations": "ablations", "recipes": "recipes"}
"""Subpackages of ``gatelab`` and the repository folders pyproject.toml maps them from."""
MYPY_CACHE = REPO / ".mypy_cache"
"""mypy's own default folder when run in the repository (git-ignored)."""


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout


def installed_layout(root: Path) -> Path:
    """The ``gatelab`` package as it is installed, made of links to the repository's files:
    mypy reads module names from folders and cannot follow pyproject's mapping."""
    package = root / "gatelab"
    package.mkdir()
    for item in (REPO / "gatelab").iterdir():
        (package / item.name).symlink_to(item)
    for sub, folder in MAPPED.items():
        (package / sub).symlink_to(REPO / folder)
    return root


def test_mypy_passes(tmp_path: Path) -> None:
    root = installed_layout(tmp_path)
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                             str(REPO / "pyproject.toml"), "--cache-dir", str(MYPY_CACHE),
                             "-p", "gatelab"], cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout
