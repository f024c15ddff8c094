"""Sweeps end to end with real processes: a local Ray, `ray start` + `ray job submit`, a driver
killed with SIGKILL, a worker killed mid-run, an Optuna search interrupted and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from local_ray import ray_env
from mlflow.tracking import MlflowClient

from gatelab.contract import LEFT_SWEEP, SWEEP_TAG_PREFIX, Tag

REPO = Path(__file__).resolve().parents[3]
SHORT = ("{steps: %d, eval_every: 10, checkpoint_every: 10, warmup_steps: 3, batch_size: 8, "
         "seq_len: 64, eval_batches: 2, measure_batches: 1}")
SWEEPS = f"""
mini:
  description: two quick runs
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {SHORT % 20}
  seeds: [0]
long:
  description: three longer runs, to be interrupted
  variants: [baseline, g1-headwise, g2-headwise]
  recipe: tiny
  overrides: {SHORT % 60}
  seeds: [0]
empty-corpus:
  description: a run that fails before its MLflow run would exist
  variants: [baseline]
  recipe: tiny
  overrides: {{steps: 20, data.source: EMPTY}}
  seeds: [0]
greedy:
  description: runs that ask for more CPUs than any node has
  variants: [baseline]
  recipe: tiny
  overrides: {SHORT % 20}
  seeds: [0]
  resources: {{cpus: 64}}
missing-corpus:
  description: a corpus that does not exist
  variants: [baseline]
  recipe: tiny
  overrides: {{steps: 20, data.source: /no/such/corpus.txt}}
  seeds: [0]
search:
  description: a few Optuna trials
  variants: [baseline]
  recipe: tiny
  overrides: {SHORT % 30}
  search: {{trials: 3, lr_min: 1.0e-3, lr_max: 3.0e-2, parallel: 1}}
"""

pytestmark = pytest.mark.slow


@pytest.fixture()
def bare_place(tmp_path: Path) -> dict[str, str]:
    """The sweeps file, and where the store and the work dir would be (neither exists yet)."""
    sweeps = tmp_path / "sweeps.yaml"
    (tmp_path / "empty.txt").write_text("\n\n")
    sweeps.write_text(SWEEPS.replace("EMPTY", str(tmp_path / "empty.txt")))
    return {"sweeps": str(sweeps), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "work": str(tmp_path / "work"), "tmp": str(tmp_path)}


@pytest.fixture()
def place(bare_place: dict[str, str], work_dir: Path, mlflow_uri: str) -> dict[str, str]:
    """``bare_place`` with a migrated empty store and the built-in corpus's data cache."""
    assert (mlflow_uri, str(work_dir)) == (bare_place["uri"], bare_place["work"])
    return bare_place


def gatelab_args(place: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "gatelab", *args, "--sweeps", place["sweeps"],
            "--tracking-uri", place["uri"], "--work-dir", place["work"], "--no-progress"]


def run_cli(place: dict[str, str], *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(gatelab_args(place, *args), cwd=REPO, env=ray_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(place: dict[str, str], *args: str) -> subprocess.Popen:
    log = open(Path(place["tmp"]) / "driver.log", "a")  # noqa: SIM115
    return subprocess.Popen(gatelab_args(place, *args), cwd=REPO, env=ray_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever Ray processes its session left behind."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def training_runs(client: MlflowClient, exp: Any) -> list[Any]:
    """The experiment's training runs (not the sweeps' parent runs)."""
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if Tag.RUN_HASH in r.data.tags]


def runs_by_hash(uri: str) -> Counter[str]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gatelab")
    return Counter(r.data.tags["gatelab.run_hash"] for r in training_runs(client, exp))


def statuses(uri: str) -> dict[str, str]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gatelab")
    return {r.data.tags["gatelab.run_hash"]: r.data.tags["gatelab.status"]
            for r in training_runs(client, exp)}


def plan_json(place: dict[str, str], name: str) -> dict:
    result = run_cli(place, "sweep", name, "--dry-run", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_sweep_run_twice_runs_nothing_the_second_time_and_an_old_identity_is_stale(
        place: dict[str, str]) -> None:
    before = plan_json(place, "mini")
    assert [r["state"] for r in before["runs"]] == ["to run", "to run"]
    assert before["estimate"]["tokens"] == 2 * 20 * 8 * 64
    first = run_cli(place, "sweep", "mini")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 ran now, 0 already recorded" in first.stdout
    assert "Open the MLflow UI" in first.stdout
    second = run_cli(place, "sweep", "mini")
    assert second.returncode == 0
    assert "nothing to run" in second.stderr and "0 ran now, 2 already recorded" in second.stdout
    after = plan_json(place, "mini")
    assert [r["hash"] for r in after["runs"]] == [r["hash"] for r in before["runs"]]
    assert [r["state"] for r in after["runs"]] == ["done", "done"]
    assert set(runs_by_hash(place["uri"]).values()) == {1}

    # A store written by older code: the baseline's run recorded under another identity.
    client = MlflowClient(place["uri"])
    old = client.search_runs([client.get_experiment_by_name("gatelab").experiment_id],
                             f"tags.`{Tag.VARIANT}` = 'baseline'")[0]
    client.set_tag(old.info.run_id, Tag.RUN_HASH, "0123456789abcdef")
    stale = plan_json(place, "mini")
    assert [r["state"] for r in stale["runs"]] == ["stale", "done"]
    assert stale["runs"][0]["stale_run_id"] == old.info.run_id
    text = run_cli(place, "sweep", "mini", "--dry-run", timeout=120).stdout
    assert "1 done, 1 stale" in text and "identity that no longer matches" in text
    third = run_cli(place, "sweep", "mini")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "1 ran now, 1 already recorded" in third.stdout
    assert client.get_run(old.info.run_id).data.tags[f"{SWEEP_TAG_PREFIX}mini"] == LEFT_SWEEP
    from gatelab import dashboards

    loaded = dashboards.load("mini", tracking_uri=place["uri"]).frame
    assert old.info.run_id not in loaded["run_id"].to_list() and loaded.height == 2
    assert [r["state"] for r in plan_json(place, "mini")["runs"]] == ["done", "done"]


def test_two_drivers_on_one_sweep_train_each_hash_once(place: dict[str, str]) -> None:
    drivers = [subprocess.Popen(gatelab_args(place, "sweep", "mini"), cwd=REPO, env=ray_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [d.communicate(timeout=600) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [o[1][-2000:] for o in outs]
    assert set(runs_by_hash(place["uri"]).values()) == {1}  # one MLflow run per hash
    assert set(statuses(place["uri"]).values()) == {"finished"}
    client = MlflowClient(place["uri"])
    for run in training_runs(client, client.get_experiment_by_name("gatelab")):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(1, 21))  # trained once: no step logged twice
    for out, _ in outs:
        assert "baseline" in out and "g1-headwise" in out  # both drivers report every run


def test_failures_are_never_quiet(place: dict[str, str]) -> None:
    missing = run_cli(place, "sweep", "missing-corpus", timeout=120)
    assert missing.returncode == 2 and "/no/such/corpus.txt does not exist" in missing.stderr
    greedy = run_cli(place, "sweep", "greedy", timeout=200)
    assert greedy.returncode == 2
    assert "each run asks for 64 CPUs (resources.cpus), but the largest node" in greedy.stderr
    empty = run_cli(place, "sweep", "empty-corpus", timeout=300)
    assert empty.returncode == 1, empty.stderr[-3000:]
    assert "holds no text" in empty.stdout and "rerun with --retry-failed" in empty.stdout
    assert list(statuses(place["uri"]).values()) == ["failed"]  # recorded, with its cause
    again = run_cli(place, "sweep", "empty-corpus", timeout=300)
    assert again.returncode == 1 and "0 ran now" in again.stdout
    assert "(recorded earlier): CorpusError" in again.stdout and "holds no text" in again.stdout
    plan = run_cli(place, "sweep", "empty-corpus", "--dry-run", timeout=120).stdout
    assert "failed before (rerun with --retry-failed" in plan and "holds no text" in plan


def test_a_bad_sweep_is_refused_before_anything_starts(bare_place: dict[str, str]) -> None:
    place = bare_place
    Path(place["sweeps"]).write_text("bad:\n  description: d\n  variants: [g1-headwize]\n")
    result = run_cli(place, "sweep", "bad", timeout=120)
    assert result.returncode == 2
    assert "'g1-headwize' is not a known variant (did you mean 'g1-headwise'?)" in result.stderr
    assert not Path(place["uri"].removeprefix("sqlite:///")).exists()


def test_a_driver_killed_mid_sweep_resumes_and_every_run_ends_once(
        place: dict[str, str]) -> None:
    driver = start_cli(place, "sweep", "long")
    checkpoints = Path(place["work"]) / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("*/last.pt")), 240, "a first checkpoint")
    kill_session(driver)
    # The driver's local Ray is stopped with it (ray_guard.py): each run's worker gets SIGTERM
    # and ends its run interrupted at a step boundary if it can in the grace, else stays running.
    assert {"running", "interrupted"} & set(statuses(place["uri"]).values())
    result = run_cli(place, "sweep", "long", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = runs_by_hash(place["uri"])
    assert len(counts) == 3 and set(counts.values()) == {1}
    assert set(statuses(place["uri"]).values()) == {"finished"}


def _train_workers(root: int | None = None) -> list[int]:
    """Ray train-task workers; with ``root``, only those under that process (another Ray on
    the same machine, a user's own sweep, must never be touched)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if "ray::train_task" in line]
    if root is None:
        return pids
    tree = process_tree(root)
    return [p for p in pids if p in tree]


def process_tree(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(v) for v in line.split())
        children.setdefault(parent, []).append(child)
    tree, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (``ss``, read locally)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if any(f"pid={pid}," in line for pid in pids)]


def test_a_killed_worker_fails_its_run_and_the_others_finish(place: dict[str, str]) -> None:
    """With Ray's retries off (``--task-retries 0``): a retried run resuming on another node is
    ``test_cluster.py``'s."""
    driver = start_cli(place, "sweep", "long", "--task-retries", "0")
    wait_for(lambda: len(_train_workers(driver.pid)) >= 1 and any(
        v == "running" for v in statuses_or_empty(place["uri"]).values()), 240,
        "a running train task")
    # While it runs: the local Ray (GCS, raylet, workers, agents) listens on loopback only.
    addresses = listening_addresses(process_tree(driver.pid))
    assert len(addresses) >= 4, addresses
    hosts = {a.rsplit(":", 1)[0] for a in addresses}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, addresses
    victim = _train_workers(driver.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert driver.wait(timeout=600) == 1
    final = statuses(place["uri"])
    assert sorted(final.values()) == ["failed", "finished", "finished"]
    client = MlflowClient(place["uri"])
    exp = client.get_experiment_by_name("gatelab")
    failed = [r for r in training_runs(client, exp)
              if r.data.tags["gatelab.status"] == "failed"]
    assert "Worker" in failed[0].data.tags["gatelab.failure"] or "died" in failed[0].data.tags[
        "gatelab.failure"]
    log = (Path(place["tmp"]) / "driver.log").read_text()
    assert "not finished (rerun with --retry-failed" in log


def statuses_or_empty(uri: str) -> dict[str, str]:
    try:
        return statuses(uri)
    except Exception:
        return {}


def test_an_interrupted_optuna_search_resumes(place: dict[str, str]) -> None:
    import optuna

    storage = f"sqlite:///{Path(place['tmp']) / 'optuna.db'}"

    def complete_trials() -> int:
        try:
            study = optuna.load_study(study_name="search:baseline:s0", storage=storage)
        except Exception:
            return 0
        return sum(t.state.name == "COMPLETE" for t in study.trials)

    driver = start_cli(place, "sweep", "search")
    wait_for(lambda: complete_trials() >= 1, 300, "a first complete trial")
    kill_session(driver)
    plan = plan_json(place, "search")
    assert any("trials done" in n for n in plan["notes"])
    result = run_cli(place, "sweep", "search", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert complete_trials() == 3
    assert "largest stable lr" in result.stdout
    assert set(runs_by_hash(place["uri"]).values()) == {1}
    # The trials sit under the search's parent run, which ended with the search.
    from gatelab.runners.sweep.parent import SweepParent

    client = MlflowClient(place["uri"])
    parent = SweepParent.find(client, "gatelab", "search")
    assert parent is not None and client.get_run(parent.info.run_id).info.status == "FINISHED"
    trials = training_runs(client, client.get_experiment_by_name("gatelab"))
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {parent.info.run_id}


def stop_processes_under(temp_dir: str) -> None:
    """Stop the Ray that `ray start --temp-dir TEMP_DIR` started, by process id (never a
    machine-wide `ray stop`): every process whose command line names its temp dir, and their
    children."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    roots = {int(line.split(None, 1)[0]) for line in out.splitlines()
             if temp_dir in line and str(os.getpid()) != line.split(None, 1)[0]}
    pids = set().union(*(process_tree(pid) for pid in roots)) if roots else set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                           text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ray_job_submit_runs_a_sweep_on_a_started_cluster(place: dict[str, str]) -> None:
    env = ray_env()
    ray_bin = str(Path(sys.executable).parent / "ray")
    # Ray's unix sockets live under --temp-dir, whose path must stay short (108 bytes max).
    ray_tmp = tempfile.mkdtemp(prefix="gl-ray-", dir="/tmp")
    # Every port with a fixed default is chosen free: another Ray on the machine (a local
    # sweep's, a test's running in parallel) may hold it; with the job agent's default (52365)
    # held, no agent takes the job.
    dashboard = _free_port()
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(_free_port()),
                            "--num-cpus", "2", "--dashboard-host", "127.0.0.1",
                            "--dashboard-port", str(dashboard),
                            "--dashboard-agent-listen-port", str(_free_port()),
                            "--ray-client-server-port", str(_free_port()),
                            "--temp-dir", ray_tmp], env=env, capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{dashboard}" in listening
        entry = " ".join(gatelab_args(place, "sweep", "mini")[1:])
        # The job runs the installed gatelab: no copy of the repository is needed.
        submit = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--",
             sys.executable, *entry.split()],
            env=env, capture_output=True, text=True, timeout=400)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "2 ran now" in submit.stdout
    finally:
        stop_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    left = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
    assert [line for line in left.stdout.splitlines() if ray_tmp in line] == []  # all stopped
    assert set(statuses(place["uri"]).values()) == {"finished"}
    assert len(runs_by_hash(place["uri"])) == 2
