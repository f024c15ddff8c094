"""One training per hash: the lease file, its takeover when stale, and two `gatelab train` of
the same hash started together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab.runners.run import lease as lease_module
from gatelab.runners.run.lease import Lease

REPO = Path(__file__).resolve().parents[3]


def test_a_held_lease_names_its_owner_and_is_released(tmp_path: Path) -> None:
    first, second = Lease(tmp_path, "h"), Lease(tmp_path, "h")
    assert first.try_acquire() == (True, None)
    taken, holder = second.try_acquire()
    assert not taken and holder is not None and holder.pid == os.getpid()
    assert f"process {os.getpid()}" in holder.describe()
    first.release()
    assert not first.path.exists() and second.try_acquire() == (True, None)
    second.release()


def test_a_lease_whose_owner_died_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = tmp_path / "leases" / "h.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout),
                                "since": time.time(), "token": "old"}))
    lease = Lease(tmp_path, "h")
    assert lease.holder() is None
    assert lease.acquire() is lease and json.loads(path.read_text())["token"] != "old"
    lease.release()


def test_a_lease_without_heartbeat_goes_stale(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "leases" / "h.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0.0, "token": "x"}))
    assert Lease(tmp_path, "h").holder() is not None  # another node's, freshly touched
    old = time.time() - lease_module.STALE_AFTER_S - 1
    os.utime(path, (old, old))
    assert Lease(tmp_path, "h").holder() is None


def test_contenders_for_a_stale_lease_take_it_once(tmp_path: Path) -> None:
    path = tmp_path / "leases" / "h.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0.0, "token": "x"}))
    old = time.time() - lease_module.STALE_AFTER_S - 1
    os.utime(path, (old, old))
    winners: list[Lease] = []
    lock = threading.Lock()

    def contend() -> None:
        for _ in range(50):
            candidate = Lease(tmp_path, "h")
            if candidate.try_acquire()[0]:
                with lock:
                    winners.append(candidate)
                return

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    winners[0].release()


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir", "mlflow_uri")  # copies: the data cache, a migrated store
def test_two_trains_of_one_hash_train_it_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "gatelab", "train", "baseline", "--steps", "30",
           "--batch-size", "8", "--seq-len", "64", "--set", "eval_every=10",
           "--set", "checkpoint_every=10", "--set", "warmup_steps=3", "--set", "eval_batches=1",
           "--set", "measure_batches=1", "--threads", "1", "--tracking-uri", uri,
           "--work-dir", str(tmp_path / "work"), "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdout = [o[0] for o in outs]
    assert sum("already recorded for this hash; nothing trained" in s for s in stdout) == 1
    assert sum("is being trained by process" in o[1] for o in outs) == 1
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gatelab").experiment_id])
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert steps == list(range(1, 31))
