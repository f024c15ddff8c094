"""Sweeps on a real two-node Ray cluster on this machine, as README's cluster section runs them:
`gatelab server` (MLflow with proxied artifacts), `ray start --head`, a second node (its own
raylet, started as Ray's multi-node test utility starts one, see ``second_node.py``),
`ray job submit`; then a node lost mid-run, an LR search stopped and submitted again, and the
refusals that name the fix. Every service listens on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from built_once import BuiltOnce
from mlflow.tracking import MlflowClient
from test_sweep import _free_port, ray_env, stop_processes_under, wait_for

from gatelab.contract import SWEEP_TAG_PREFIX, Tag

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RAY = str(Path(sys.executable).parent / "ray")
SHORT = ("{steps: %d, eval_every: 10, checkpoint_every: %d, warmup_steps: 3, batch_size: 8, "
         "seq_len: 64, eval_batches: 2, measure_batches: 1}")
SWEEPS = f"""
four:
  description: four quick runs over two nodes
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {SHORT % (20, 10)}
  seeds: [0, 1]
two-long:
  description: two runs long enough to lose a node under one
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {SHORT % (100, 20)}
  seeds: [0]
broken:
  description: a run that fails on its worker (an empty corpus)
  variants: [baseline]
  recipe: tiny
  overrides: {{steps: 20, data.source: EMPTY}}
  seeds: [0]
search:
  description: an LR search of a few trials
  variants: [baseline]
  recipe: tiny
  overrides: {SHORT % (30, 10)}
  search: {{trials: 3, lr_min: 1.0e-3, lr_max: 3.0e-2, parallel: 1}}
"""


@dataclass
class Cluster:
    gcs: str
    dashboard: str
    temp_dir: str
    head_id: str
    second_temp_dir: str = ""
    second: subprocess.Popen[str] | None = None
    second_id: str = ""
    second_pids: tuple[int, ...] = ()


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _node_ids(dashboard: str) -> list[str]:
    """The live nodes' ids, from the dashboard's state API: one local HTTP request, where a
    driver started to ask ``ray.nodes()`` takes seconds of imports and a connection."""
    try:
        with DIRECT.open(f"{dashboard}/api/v0/nodes?limit=100", timeout=10) as response:
            nodes = json.load(response)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):  # the cluster is not answering yet: no node seen
        return []
    return [n["node_id"] for n in nodes if n["state"] == "ALIVE"]


def add_second_node(cluster: Cluster) -> None:
    cluster.second_temp_dir = tempfile.mkdtemp(prefix="gl-rn-", dir="/tmp")
    proc = subprocess.Popen([sys.executable, str(HERE / "second_node.py"), cluster.gcs, "1",
                             cluster.second_temp_dir],
                            env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    cluster.second = proc  # stopped by remove_second_node whatever happens next
    started = json.loads(proc.stdout.readline())
    cluster.second_id = started["node_id"]
    cluster.second_pids = tuple(started["pids"])
    wait_for(lambda: cluster.second_id in _node_ids(cluster.dashboard), 240, "the second node")


def remove_second_node(cluster: Cluster, hard: bool) -> None:
    """``hard``: SIGKILL the node's raylet and everything under it, as a machine that dies."""
    from gatelab.tracking_server import _descendants

    if cluster.second is None:
        return
    if hard:
        for pid in set().union(*(_descendants(p) for p in cluster.second_pids)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(cluster.second.pid, signal.SIGTERM)
    cluster.second.wait(timeout=60)
    cluster.second = None
    stop_processes_under(cluster.second_temp_dir)
    shutil.rmtree(cluster.second_temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    """The head and a second node, for the module's tests; stopped after the last."""
    temp_dir = tempfile.mkdtemp(prefix="gl-rc-", dir="/tmp")  # short: Ray's socket paths
    port, dash = _free_port(), _free_port()
    start = subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "1",
                            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                            "--dashboard-agent-listen-port", str(_free_port()),
                            "--ray-client-server-port", str(_free_port()),
                            "--temp-dir", temp_dir, "--disable-usage-stats"],
                           env=ray_env(), capture_output=True, text=True, timeout=180)
    gcs = f"127.0.0.1:{port}"
    made = Cluster(gcs, f"http://127.0.0.1:{dash}", temp_dir, "")
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        wait_for(lambda: bool(_node_ids(made.dashboard)), 240, "the head node")
        made.head_id = _node_ids(made.dashboard)[0]
        add_second_node(made)
        yield made
    finally:
        remove_second_node(made, hard=True)
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def cluster(ray_cluster: Cluster) -> Cluster:
    """The two-node cluster; a second node that a test took down is started again first."""
    if ray_cluster.second is None:
        add_second_node(ray_cluster)
    return ray_cluster


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(store / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "gatelab", "server", "--store", str(store),
                             "--port", str(port)], env=ray_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
        except OSError:
            return False
        return True

    try:
        wait_for(healthy, 120, "gatelab server")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A user's project folder: the sweeps file the job is submitted with."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "empty.txt").write_text("\n\n")
    (folder / "sweeps.yaml").write_text(SWEEPS.replace("EMPTY", str(folder / "empty.txt")))
    return folder


def submit(cluster: Cluster, project: Path, command: str, *, wait: bool = True,
           timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``ray job submit --working-dir PROJECT -- bash -c COMMAND``, as README says."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    args = [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(project),
            "--runtime-env-json", json.dumps({"env_vars": {"GATELAB_GIT_COMMIT": commit,
                                                     "GATELAB_DEBUG": "1"}})]
    if not wait:
        args.append("--no-wait")
    return subprocess.run([*args, "--", "bash", "-c", command], env=ray_env(),
                          capture_output=True, text=True, timeout=timeout)


def gatelab(*args: str) -> str:
    return " ".join([sys.executable, "-m", "gatelab", *args])


def training_runs(url: str, sweep: str | None = None) -> list[Any]:
    """The training runs recorded through the server (of ``sweep``, when named)."""
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("gatelab")
    query = "" if sweep is None else f"tags.`{SWEEP_TAG_PREFIX}{sweep}` = '1'"
    runs = client.search_runs([exp.experiment_id], query) if exp else []
    return [r for r in runs if Tag.RUN_HASH in r.data.tags]


def test_a_sweep_submitted_to_two_nodes_records_everything_through_the_server(
        cluster: Cluster, server: str, project: Path, tmp_path: Path,
        built_once: BuiltOnce) -> None:
    storage = tmp_path / "shared"
    built_once.data_cache(storage / "cache")
    command = (gatelab("sweep", "four", "--sweeps", "sweeps.yaml", "--tracking-uri", server,
                       "--storage", str(storage), "--no-progress") + " && " +
               gatelab("report", "four", "--tracking-uri", server, "--out", "report"))
    done = submit(cluster, project, command)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 ran now" in done.stdout and "Attached to MLflow" in done.stdout
    assert f"Open the MLflow UI: {server}/#/experiments/" in done.stdout  # the server's own UI
    shutil.rmtree(project)  # the submitting copy is gone; Ray's job copy is temporary too
    runs = training_runs(server, "four")
    assert len(runs) == 4 and {r.data.tags[Tag.STATUS] for r in runs} == {"finished"}
    nodes = {r.data.tags[Tag.NODE].split()[0] for r in runs}
    assert nodes == {cluster.head_id, cluster.second_id}  # both nodes trained
    for run in runs:
        assert run.data.tags[Tag.GIT_COMMIT] != "unknown"  # passed from the submitting side
        assert len(run.data.tags[Tag.CODE_HASH]) == 64
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        got = MlflowClient(server).download_artifacts(run.info.run_id, "config.json",
                                                      str(tmp_path / run.info.run_id))
        assert json.loads(Path(got).read_text())["spec"]["id"] == run.data.tags[Tag.VARIANT]
    summary = [r for r in MlflowClient(server).search_runs(
        [runs[0].info.experiment_id], f"tags.`{Tag.SUMMARY}` = '1'")]
    assert len(summary) == 1
    listed = {a.path for a in MlflowClient(server).list_artifacts(summary[0].info.run_id,
                                                                  "report")}
    assert "report/report.html" in listed
    # Nothing was written into the job's working copy under Ray's temp dir.
    assert not [p for p in Path(cluster.temp_dir).rglob("mlruns")]
    # The data was built once, sealed, and the checkpoints of finished runs are gone.
    assert list((storage / "cache").glob("manifest-*.json"))
    assert not list((storage / "checkpoints").rglob("last.pt"))


def test_a_worker_error_reaches_the_job_logs_and_the_failed_run(
        cluster: Cluster, server: str, project: Path, tmp_path: Path) -> None:
    command = gatelab("sweep", "broken", "--sweeps", "sweeps.yaml", "--tracking-uri", server,
                      "--storage", str(tmp_path / "shared"), "--no-progress")
    done = submit(cluster, project, command)
    assert done.returncode != 0  # the job failed, and says why
    logs = done.stdout + done.stderr
    # The driver prints the worker's traceback as Ray gives it (file lines, the raise).
    assert "failed on a worker" in logs and 'line ' in logs and "raise CorpusError" in logs, (
        logs[-6000:])
    assert "holds no text" in logs
    [run] = training_runs(server, "broken")
    assert run.data.tags[Tag.STATUS] == "failed" and "holds no text" in run.data.tags[Tag.FAILURE]
    error = MlflowClient(server).download_artifacts(run.info.run_id, "error.txt",
                                                    str(tmp_path / "error"))
    assert "Traceback" in Path(error).read_text()


def test_a_local_store_or_a_missing_storage_is_refused_on_two_nodes(
        cluster: Cluster, server: str, project: Path, tmp_path: Path) -> None:
    before = len(training_runs(server))
    base = [sys.executable, "-m", "gatelab", "sweep", "two-long", "--sweeps",
            str(project / "sweeps.yaml"), "--address", cluster.gcs, "--no-progress"]
    local = subprocess.run([*base, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                            "--storage", str(tmp_path / "s")], env=ray_env(),
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 2, local.stdout + local.stderr
    assert "the Ray cluster has 2 nodes" in local.stderr
    assert "gatelab server" in local.stderr and "--tracking-uri http://" in local.stderr
    no_storage = subprocess.run([*base, "--tracking-uri", server], env=ray_env(),
                                capture_output=True, text=True, timeout=300)
    assert no_storage.returncode == 2, no_storage.stdout + no_storage.stderr
    assert "no --storage was named" in no_storage.stderr
    assert len(training_runs(server)) == before  # refused before any run was created


def test_an_lr_search_submitted_again_resumes_its_study(cluster: Cluster, server: str,
                                                         project: Path, tmp_path: Path,
                                                         built_once: BuiltOnce) -> None:
    import optuna

    storage = tmp_path / "shared"
    built_once.data_cache(storage / "cache")
    study_db = f"sqlite:///{storage / 'optuna.db'}"
    command = gatelab("sweep", "search", "--sweeps", "sweeps.yaml", "--tracking-uri", server,
                      "--storage", str(storage), "--no-progress")

    def complete() -> list[int]:
        try:
            study = optuna.load_study(study_name="search:baseline:s0", storage=study_db)
        except Exception:
            return []
        return [t.number for t in study.trials if t.state.name == "COMPLETE"]

    first = submit(cluster, project, command, wait=False, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    found = re.search(r"raysubmit_\w+", first.stdout)
    assert found is not None, first.stdout
    job_id = found[0]
    wait_for(lambda: len(complete()) >= 1, 400, "a first complete trial")
    stopped = subprocess.run([RAY, "job", "stop", "--address", cluster.dashboard, job_id],
                             env=ray_env(), capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    before = complete()
    again = submit(cluster, project, command)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    after = complete()
    assert len(after) == 3 and set(before) <= set(after)  # the count went on from the first job
    assert "largest stable lr" in again.stdout


def test_a_node_lost_mid_run_resumes_the_run_on_the_other_node(
        cluster: Cluster, server: str, project: Path, tmp_path: Path,
        built_once: BuiltOnce) -> None:
    storage = tmp_path / "shared"
    built_once.data_cache(storage / "cache")
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115
    driver = subprocess.Popen(
        [sys.executable, "-m", "gatelab", "sweep", "two-long", "--sweeps",
         str(project / "sweeps.yaml"), "--address", cluster.gcs, "--tracking-uri", server,
         "--storage", str(storage), "--no-progress"],
        env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def on_second_with_checkpoint() -> bool:
            for run in training_runs(server, "two-long"):
                node = run.data.tags.get(Tag.NODE, "")
                ckpt = storage / "checkpoints" / run.data.tags[Tag.RUN_HASH] / "last.pt"
                if node.startswith(cluster.second_id) and ckpt.is_file():
                    return True
            return False

        wait_for(on_second_with_checkpoint, 600, "a run past its checkpoint on the second node")
        [lost] = [r for r in training_runs(server, "two-long")
                  if r.data.tags[Tag.NODE].startswith(cluster.second_id)]
        remove_second_node(cluster, hard=True)
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:  # the second node stays down: the next test that needs it starts it again
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
    runs = training_runs(server, "two-long")
    mine = [r for r in runs if r.data.tags[Tag.RUN_HASH] == lost.data.tags[Tag.RUN_HASH]]
    assert len(mine) == 1 and mine[0].info.run_id == lost.info.run_id  # one run for its hash
    resumed = mine[0]
    assert resumed.data.tags[Tag.STATUS] == "finished"
    assert resumed.data.tags[Tag.NODE].startswith(cluster.head_id)  # finished on the head
    history = MlflowClient(server).get_metric_history(resumed.info.run_id, "train_loss")
    steps = [m.step for m in history]
    assert set(steps) == set(range(1, 101))
    assert steps.count(1) == 1  # resumed from its checkpoint, not restarted from step 1
    assert {r.data.tags[Tag.STATUS] for r in runs} == {"finished"} and len(runs) == 2
