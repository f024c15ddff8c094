"""A sweep's places and Ray address are checked before any plan: a storage nothing can be
written to, a Ray address where nothing answers (in seconds, in one line) and a missing
``--ablations`` folder are refused naming the flag; a local Ray dies with its driver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gatelab.runners.run.storage import Storage, StorageError
from gatelab.runners.sweep.context import (
    RAY_CONNECT_TIMEOUT_S,
    RayUnreachableError,
    SweepContext,
    check_reachable,
    check_writable,
    connect_ray,
)
from gatelab.shipped import ABLATIONS_ENV, ablation_folders

REPO = Path(__file__).resolve().parents[3]
GATELAB = [sys.executable, "-m", "gatelab"]


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_writable_storage_passes_and_is_left_as_it_was(tmp_path: Path) -> None:
    check_writable(Storage.resolve(str(tmp_path / "new" / "deeper"), tmp_path), "--storage")
    assert list(tmp_path.iterdir()) == []  # nothing created, the probe removed
    check_writable(Storage.resolve("memory://gatelab-test/storage", tmp_path), "--storage")


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_a_storage_nothing_can_be_written_to_is_refused_naming_the_flag(
        tmp_path: Path, where: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    root = {"file": a_file, "under-file": a_file / "sub",
            "proc": Path("/proc/gatelab-storage")}[where]
    with pytest.raises(StorageError) as info:
        check_writable(Storage.resolve(str(root), tmp_path), "--storage")
    message = str(info.value)
    assert message.startswith(f"--storage {root}: nothing can be written there (")
    assert "\n" not in message


def test_an_unknown_storage_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match=r"^--storage nosuch://bucket/x: nothing can be "):
        check_writable(Storage.resolve("nosuch://bucket/x", Path(".")), "--storage")


def test_the_sweep_context_checks_its_storage_before_it_opens_the_store(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(StorageError, match=f"--storage {a_file}/ckpt: nothing can be written"):
        SweepContext(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", work_dir=tmp_path,
                     storage=str(a_file / "ckpt"))
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was touched
    with pytest.raises(StorageError, match=f"--work-dir {a_file}: nothing can be written"):
        SweepContext(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", work_dir=a_file)


def test_a_ray_address_where_nothing_listens_fails_in_seconds() -> None:
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(RayUnreachableError) as info:
        connect_ray(f"127.0.0.1:{port}")
    assert time.monotonic() - start < RAY_CONNECT_TIMEOUT_S + 2
    message = str(info.value)
    assert message.startswith(f"--address 127.0.0.1:{port}: no Ray cluster answers there (")
    assert "\n" not in message
    import ray

    assert not ray.is_initialized()


def test_a_ray_address_is_checked_for_its_form_and_a_listener() -> None:
    with pytest.raises(RayUnreachableError, match=r"^\$RAY_ADDRESS my-head: not a Ray address"):
        check_reachable("my-head", "$RAY_ADDRESS")
    with pytest.raises(RayUnreachableError, match=r"http://HOST:8265 is the address of ray job"):
        check_reachable("http://127.0.0.1:8265", "--address")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}", "--address")
        check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}", "--address")


def test_a_missing_ablations_folder_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ABLATIONS_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=f"^--ablations {tmp_path / 'nope'} "
                       r"\(\$GATELAB_ABLATIONS\): no such folder; give a folder"):
        ablation_folders()
    monkeypatch.setenv(ABLATIONS_ENV, str(tmp_path))
    assert ablation_folders()[0] == tmp_path.resolve()


def test_the_cli_refuses_each_in_one_line(tmp_path: Path) -> None:
    port = _free_port()
    cases = [
        (["sweep", "smoke", "--dry-run", "--address", f"127.0.0.1:{port}"],
         f"gatelab sweep: --address 127.0.0.1:{port}: no Ray cluster answers there"),
        (["sweep", "smoke", "--dry-run", "--storage", "/proc/gatelab-storage"],
         "gatelab sweep: --storage /proc/gatelab-storage: nothing can be written there"),
        (["list", "--ablations", str(tmp_path / "nope")],
         f"gatelab list: --ablations {tmp_path / 'nope'} ($GATELAB_ABLATIONS): no such folder"),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    for args, expected in cases:
        start = time.monotonic()
        done = subprocess.run([*GATELAB, *args, *(["--work-dir", str(tmp_path / "w")]
                                                  if args[0] == "sweep" else [])],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert time.monotonic() - start < 60, args
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
        assert done.stderr.startswith(expected), done.stderr


DRIVER = """
import os, sys, time
import psutil
from gatelab.runners.sweep.context import connect_ray
connect_ray(None)
time.sleep(3)  # Ray's agents and first workers are up
me = psutil.Process()
print(" ".join(str(p.pid) for p in me.children(recursive=True)), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_driver_takes_its_local_ray_with_it(tmp_path: Path) -> None:
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    started: list[psutil.Process] = []
    try:
        assert driver.stdout is not None
        started = [psutil.Process(int(pid)) for pid in driver.stdout.readline().split()]
        names = " ".join(p.name() for p in started)
        assert "raylet" in names and len(started) >= 6, names  # the agents among them
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed_at = time.monotonic()
        while any(_alive(p) for p in started) and time.monotonic() - killed_at < 30:
            time.sleep(0.2)
        outlived = time.monotonic() - killed_at
        left = [f"{p.pid} {p.name()}" for p in started if _alive(p)]
        assert not left and outlived < 10, (left, outlived)  # without the guard: 60 s and more
    finally:
        driver.kill()
        for p in started:
            if _alive(p):
                p.kill()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
