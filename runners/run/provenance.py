"""The code a run used: its git commit (and whether the tree had uncommitted changes), a
content hash of the installed package that holds without ``.git``, and the node it ran on."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root of a checkout (``runners/run/`` is two folders below it), where
``git`` reads the commit."""
COMMIT_ENV = "GATELAB_GIT_COMMIT"
"""The commit of the submitting checkout, for code that runs without ``.git`` (a Ray job's
working copy): ``ray job submit --runtime-env-json '{"env_vars": {"GATELAB_GIT_COMMIT":
"<sha>"}}'``. Used only where ``git`` cannot tell."""
SOURCE_SUFFIXES = (".py", ".yaml", ".j2")


def git_state(repo: Path = REPO) -> tuple[str, bool | None]:
    """(commit, dirty); outside a git checkout (e.g. a Ray job's copy) ``$GATELAB_GIT_COMMIT``
    with dirty unknown, else ("unknown", None)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(COMMIT_ENV) or "unknown", None
    return commit, bool(status.strip())


@functools.cache
def code_hash() -> str:
    """SHA-256 over the installed package's source files (``.py``, ``.yaml``, templates):
    their paths within the package and their bytes, in path order. Equal on every node that
    runs the same code, whatever its install (editable, wheel, a job's copy)."""
    import importlib.util

    import gatelab.contract

    roots: dict[str, Path] = {"gatelab": Path(gatelab.contract.__file__).resolve().parent}
    for sub in ("registry", "model", "runners", "dashboards", "ablations", "recipes"):
        # Found, not imported: importing gatelab.dashboards would cost a run's worker scipy's
        # import (~2 s) for a hash.
        spec = importlib.util.find_spec(f"gatelab.{sub}")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"gatelab.{sub} is not installed as a package")
        roots[sub] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return tree_hash(roots)


def tree_hash(roots: dict[str, Path]) -> str:
    """SHA-256 over the source files under each named root: path (prefixed by the root's name)
    and bytes, in order."""
    h = hashlib.sha256()
    for name, root in sorted(roots.items()):
        for path in sorted(root.rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and path.is_file():
                h.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def node_name() -> str:
    """The Ray node this process runs on (``<node id> on <host>``), else the host. Never
    imports Ray itself: importing it first would fix its network mode before a local sweep in
    the same process could choose loopback (``connect_ray``)."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{ray.get_runtime_context().get_node_id()} on {host}"
    return host
