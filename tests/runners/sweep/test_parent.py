"""A sweep's parent run, end to end on a local Ray: the sweep's runs are nested under one parent
that carries the description and the plan and ends with the sweep; runs recorded before the
parent existed are nested when the sweep comes back to them; a failed run makes the parent
FAILED; no reader of training runs ever sees the parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_sweep import SHORT, run_cli, training_runs

from gatelab.contract import SWEEP_TAG_PREFIX, Artifact, Tag
from gatelab.dashboards.runs import load
from gatelab.runners.sweep.parent import SweepParent
from gatelab.runners.sweep.plan import recorded_runs

PARENT_ID = "mlflow.parentRunId"
SWEEPS = f"""
mini:
  description: two quick runs, nested under one parent
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {SHORT % 20}
  seeds: [0]
  resources: {{cpus: 1}}
"""

pytestmark = pytest.mark.slow


@pytest.fixture()
def place(tmp_path: Path, work_dir: Path, mlflow_uri: str) -> dict[str, str]:
    """The sweeps file, a migrated empty store and a work dir holding the corpus's data cache."""
    sweeps = tmp_path / "sweeps.yaml"
    sweeps.write_text(SWEEPS)
    return {"sweeps": str(sweeps), "uri": mlflow_uri, "work": str(work_dir), "tmp": str(tmp_path)}


def the_parent(client: MlflowClient) -> object:
    parent = SweepParent.find(client, "gatelab", "mini")
    assert parent is not None
    return parent


def check_readers_skip_the_parent(uri: str, client: MlflowClient, hashes: set[str]) -> None:
    """The dashboards (both readers, one sweep or all: what reports, ``compare`` and
    ``--until-decided`` read) and the planner see the training runs only."""
    for backend in ("sql", "client"):
        for sweep in ("mini", None):
            frame = load(sweep, uri, "gatelab", backend=backend).frame  # type: ignore[arg-type]
            assert sorted(frame["run_hash"].to_list()) == sorted(hashes), (backend, sweep)
    assert set(recorded_runs(uri, "gatelab")) == hashes


def test_a_sweep_nests_its_runs_under_one_parent(place: dict[str, str]) -> None:
    first = run_cli(place, "sweep", "mini")
    assert first.returncode == 0, first.stdout + first.stderr
    client = MlflowClient(place["uri"])
    exp = client.get_experiment_by_name("gatelab")
    runs = training_runs(client, exp)
    hashes = {r.data.tags[Tag.RUN_HASH] for r in runs}
    assert len(hashes) == 2
    parent = the_parent(client)
    pid = parent.info.run_id  # type: ignore[attr-defined]
    tags = parent.data.tags  # type: ignore[attr-defined]
    assert parent.info.run_name == "sweep mini"  # type: ignore[attr-defined]
    assert parent.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert tags["mlflow.note.content"] == "two quick runs, nested under one parent"
    assert tags[Tag.SWEEP_PARENT] == "mini" and tags["mlflow.source.name"] == "gatelab sweep"
    assert Tag.RUN_HASH not in tags and not any(k.startswith(SWEEP_TAG_PREFIX) for k in tags)
    assert all(r.data.tags[PARENT_ID] == pid for r in runs)
    plan = json.loads(Path(client.download_artifacts(pid, Artifact.PLAN)).read_text())
    assert plan["definition"]["description"] == "two quick runs, nested under one parent"
    assert {p["hash"] for p in plan["runs"]} == hashes
    assert {p["state"] for p in plan["runs"]} == {"to run"}
    check_readers_skip_the_parent(place["uri"], client, hashes)
    dry = run_cli(place, "sweep", "mini", "--dry-run", timeout=120)
    assert "2 runs: 2 done" in dry.stdout, dry.stdout + dry.stderr

    # A store from before parents: the runs are nested under a new parent, nothing trains.
    client.delete_run(pid)
    for run in runs:
        client.delete_tag(run.info.run_id, PARENT_ID)
    again = run_cli(place, "sweep", "mini")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 to run" in again.stderr
    parent = the_parent(client)
    new_id = parent.info.run_id  # type: ignore[attr-defined]
    assert new_id != pid and parent.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert all(client.get_run(r.info.run_id).data.tags[PARENT_ID] == new_id for r in runs)
    plan = json.loads(Path(client.download_artifacts(new_id, Artifact.PLAN)).read_text())
    assert {p["state"] for p in plan["runs"]} == {"done"}

    # A run of the sweep failed: the same parent, now FAILED.
    client.set_tag(runs[0].info.run_id, Tag.STATUS, "failed")
    failed = run_cli(place, "sweep", "mini")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    parent = the_parent(client)
    assert parent.info.run_id == new_id  # type: ignore[attr-defined]
    assert parent.info.status == "FAILED"  # type: ignore[attr-defined]
    check_readers_skip_the_parent(place["uri"], client, hashes)
