"""The layout holds: one installed namespace, data-only registry and dashboards that never load
the training code, the dashboards in layers that import only downwards, the runners reaching
the dashboards through one narrow module, no import cycles, and a wheel that works away from the
repository."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"gatelab": "gatelab", "gatelab.registry": "registry", "gatelab.model": "model",
           "gatelab.runners": "runners", "gatelab.dashboards": "dashboards"}
"""Installed package -> the repository folder it is mapped from (pyproject.toml)."""


def modules() -> dict[str, Path]:
    """Every module of the installed namespace, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "gatelab" and parts and parts[0] in ("registry", "model"):
                continue
            found[name] = path
    return found


def test_the_distribution_installs_one_namespace() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "gatelab" or p.startswith("gatelab.") for p in config["packages"])
    for package, folder in FOLDERS.items():
        assert config["package-dir"][package] == folder


ISOLATION = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules
                        if m == "torch" or m.startswith(("gatelab.model", "gatelab.runners")))))
"""


def test_registry_and_dashboards_import_no_torch_model_or_runners() -> None:
    names = [n for n in modules() if n.startswith(("gatelab.registry", "gatelab.dashboards"))]
    assert len(names) > 25
    done = subprocess.run([sys.executable, "-c", ISOLATION, json.dumps(names)], cwd="/",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_progress_board_imports_no_torch_and_no_training_code() -> None:
    """The board's actor process imports only its module: before it had one of its own, the
    actor imported the whole training stack, seconds of CPU taken from a sweep's first runs."""
    done = subprocess.run([sys.executable, "-c", ISOLATION,
                           json.dumps(["gatelab.runners.sweep.board"])], cwd="/",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["gatelab.runners", "gatelab.runners.sweep",
                                       "gatelab.runners.sweep.board"]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The gatelab modules ``name`` imports anywhere in its file (functions included)."""
    return {t for t in _imports_of(path.read_text(), known) if t != name}


def _imports_of(source: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports anywhere (functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        out |= {t for t in targets if t in known}
    return out


def test_no_module_imports_one_that_imports_it_back() -> None:
    mods = modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    # A package's __init__ may re-export its own modules: that is not a cycle of ideas.
    graph = {n: {t for t in ts if not n.startswith(t + ".") and not t.startswith(n + ".")}
             for n, ts in graph.items()}
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


DASHBOARD_LAYERS: tuple[tuple[str, ...], ...] = (
    ("numbers",), ("store",), ("stats",), ("tables",), ("verdicts",), ("runs", "decide"),
    ("report",),
)
"""The dashboards' layers, lowest first, by top-level name under ``gatelab.dashboards``: a
module may import its own layer and those below, never one above (the package's
``__init__``, which exports ``load`` and ``Runs``, is above them all)."""

RUNNERS_DASHBOARDS_API = "gatelab.dashboards.decide"
"""The one module of the dashboards that the runners may import."""


def _dashboard_layer(name: str) -> int:
    """The rank of a module of ``gatelab.dashboards`` in ``DASHBOARD_LAYERS``."""
    parts = name.split(".")
    if len(parts) == 2:
        return len(DASHBOARD_LAYERS)
    for rank, layer in enumerate(DASHBOARD_LAYERS):
        if parts[2] in layer:
            return rank
    raise AssertionError(f"{name} belongs to no layer: add its top-level name to "
                         "DASHBOARD_LAYERS in tests/test_layout.py")


def _upward_imports(name: str, source: str, known: set[str]) -> list[str]:
    """The imports of ``source`` (module ``name`` of the dashboards) from a higher layer."""
    rank = _dashboard_layer(name)
    return [f"{name} imports {target}" for target in sorted(_imports_of(source, known) - {name})
            if target.startswith("gatelab.dashboards") and _dashboard_layer(target) > rank]


def test_the_dashboards_import_only_their_own_layer_and_those_below() -> None:
    mods = modules()
    known = set(mods)
    names = [n for n in mods if n == "gatelab.dashboards" or n.startswith("gatelab.dashboards.")]
    assert {n.split(".")[2] for n in names if n.count(".") >= 2} == {
        name for layer in DASHBOARD_LAYERS for name in layer}
    upward = [line for n in names for line in _upward_imports(n, mods[n].read_text(), known)]
    assert upward == []


def test_the_layer_check_sees_an_upward_import() -> None:
    """The check above, on the store's frame module made to import the report."""
    known = set(modules())
    name = "gatelab.dashboards.store.frame"
    source = ((REPO / "dashboards" / "store" / "frame.py").read_text()
              + "\nfrom gatelab.dashboards.report.write import write_report\n")
    assert _upward_imports(name, source, known) == [
        f"{name} imports gatelab.dashboards.report.write"]


def test_runners_import_one_narrow_verdict_api_of_the_dashboards() -> None:
    mods = modules()
    known = set(mods)
    used: dict[str, set[str]] = {}
    for name, path in mods.items():
        if name.startswith("gatelab.runners"):
            reached = {t for t in _imports(name, path, known)
                       if t == "gatelab.dashboards" or t.startswith("gatelab.dashboards.")}
            if reached:
                used[name] = reached
    assert set().union(*used.values()) == {RUNNERS_DASHBOARDS_API}, used
    assert "gatelab.runners.sweep.until_decided" in used


def test_no_module_uses_the_old_top_level_names() -> None:
    old = ("registry", "model", "runners", "dashboards")
    offenders = []
    roots = [REPO / f for f in (*FOLDERS.values(), "tests", "benchmarks", "experiments")]
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module
                         and node.level == 0 else [])
                offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in old]
    assert offenders == []


USER_MODULE = "raise ImportError('the user\\'s own {name}.py was imported by gatelab')\n"


@pytest.mark.slow
def test_the_wheel_works_outside_the_repository(tmp_path: Path) -> None:
    """Built, installed (not editable) into a fresh virtual environment that reuses this
    environment's dependencies, and run from a folder holding its own model.py and
    registry.py: `gatelab list --json` and a 20-step tiny training run."""
    # Built from a copy of the sources: setuptools writes build/ beside them, and a stale
    # build/ in the checkout could slip old modules into the wheel.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "out", ".gatelab", "mlflow.db*", "mlruns",
        "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("gatelab-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    # This environment's packages, appended after the new one's own: the .pth processing of
    # this site folder (gatelab's editable hook among it) does not happen there.
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install",
                                "--no-deps", "-q", str(wheel)], capture_output=True, text=True,
                               timeout=600)
    assert installed.returncode == 0, installed.stderr

    user = tmp_path / "notebook"
    user.mkdir()
    for name in ("model", "registry"):
        (user / f"{name}.py").write_text(USER_MODULE.format(name=name))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import gatelab; print(gatelab.__file__)"],
                           cwd=user, capture_output=True, text=True, env=env, timeout=120)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr

    listed = subprocess.run([str(py), "-m", "gatelab", "list", "--json"], cwd=user,
                            capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == len(list((REPO / "ablations").glob("*.yaml")))
    assert {"baseline", "g1-elementwise"} <= {r["id"] for r in rows}

    trained = subprocess.run(
        [str(env_dir / "bin" / "gatelab"), "train", "baseline", "--steps", "20",
         "--batch-size", "4", "--seq-len", "32", "--set", "eval_every=10",
         "--set", "warmup_steps=2", "--set", "eval_batches=1", "--set", "measure_batches=1",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--work-dir",
         str(tmp_path / "work"), "--no-progress", "--threads", "1"],
        cwd=user, capture_output=True, text=True, env=env, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "baseline: finished" in trained.stdout
