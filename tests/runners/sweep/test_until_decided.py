"""``gatelab sweep NAME --until-decided`` end to end on a local Ray: recorded runs count, each
round's cost is shown before it starts, the design is recorded and replayed, a changed cap is
refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_sweep import REPO, SHORT, ray_env, run_cli, runs_by_hash, training_runs

from gatelab.contract import design_tag

SWEEPS = f"""
decide:
  description: two variants, seeds added until the headwise claim is decided
  variants: [baseline, g1-headwise]
  recipe: tiny
  overrides: {SHORT % 10}
  seeds: [0, 1]
  claims: [headwise-lowers-loss]
  max_seeds: 4
searching:
  description: an Optuna search cannot run until decided
  variants: [baseline]
  recipe: tiny
  overrides: {SHORT % 10}
  search: {{trials: 2, lr_min: 1.0e-3, lr_max: 3.0e-2, parallel: 1}}
"""

pytestmark = pytest.mark.slow


@pytest.fixture()
def place(tmp_path: Path, work_dir: Path, mlflow_uri: str) -> dict[str, str]:
    """The sweeps file, a migrated empty store and a work dir holding the corpus's data cache."""
    sweeps = tmp_path / "sweeps.yaml"
    sweeps.write_text(SWEEPS)
    return {"sweeps": str(sweeps), "uri": mlflow_uri, "work": str(work_dir), "tmp": str(tmp_path)}


def test_seeds_are_added_in_rounds_and_the_design_is_kept(place: dict[str, str]) -> None:
    dry = run_cli(place, "sweep", "decide", "--until-decided", "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "looks at 2, 4 seeds" in dry.stdout and "runs left through it" in dry.stdout

    plain = run_cli(place, "sweep", "decide")  # the sweep's own seeds, recorded first
    assert plain.returncode == 0, plain.stderr
    assert len(runs_by_hash(place["uri"])) == 4
    check_mlflow_view(place["uri"])

    first = run_cli(place, "sweep", "decide", "--until-decided")
    assert first.returncode == 0, first.stdout + first.stderr
    err = first.stderr
    assert "round 1/2: seeds [0, 1], 2 variants, 4 runs (4 recorded), 0 to train" in err
    # Two seeds (df 1) cannot reach the first look's boundary: a second round runs.
    assert "round 2/2: seeds [0, 1, 2, 3], 2 variants, 8 runs (4 recorded), 4 to train" in err
    assert err.index("round 2/2") < err.index("after round 2")  # cost shown before it runs
    assert "headwise-lowers-loss" in first.stdout
    counts = runs_by_hash(place["uri"])
    assert len(counts) == 8 and set(counts.values()) == {1}

    client = MlflowClient(place["uri"])
    exp = client.get_experiment_by_name("gatelab")
    design = json.loads(exp.tags[design_tag("decide")])
    assert design["looks"] == [2, 4] and design["claims"] == ["headwise-lowers-loss"]

    again = run_cli(place, "sweep", "decide", "--until-decided")
    assert again.returncode == 0, again.stderr
    assert "0 to train" in again.stderr and "4 to train" not in again.stderr
    assert len(runs_by_hash(place["uri"])) == 8

    report = run_cli_report(place)
    assert "alpha spending" in report


def check_mlflow_view(uri: str) -> None:
    """What the MLflow UI shows: readable run names, the spec's description and hypothesis,
    the source commit, the corpus as a dataset input, the model's summary as an artifact."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gatelab")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    every = training_runs(client, exp)  # the sweep's parent run aside
    assert len(every) == 4
    for run in every:
        tags = run.data.tags
        assert run.info.run_name == (f"{tags['gatelab.variant']} lr={float(tags['gatelab.lr']):g}"
                                     f" seed={tags['gatelab.seed']}")
        assert "Hypothesis: " in tags["mlflow.note.content"]
        assert tags["mlflow.source.git.commit"] == tags["gatelab.git_commit"]
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "wiki" and len(dataset.dataset.digest) >= 8
        assert dataset.tags[0].value == "train"
        assert "model.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}


def run_cli_report(place: dict[str, str]) -> str:
    out = Path(place["tmp"]) / "report"
    result = subprocess.run(
        [sys.executable, "-m", "gatelab", "report", "decide", "--tracking-uri", place["uri"],
         "--no-attach", "--out", str(out)], cwd=REPO, env=ray_env(), capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return (out / "report.md").read_text()


def test_a_changed_cap_and_a_search_sweep_are_refused(place: dict[str, str]) -> None:
    client = MlflowClient(place["uri"])
    exp_id = client.create_experiment("gatelab")
    client.set_experiment_tag(exp_id, design_tag("decide"), json.dumps(
        {"seeds": [0, 1, 2, 3], "looks": [2, 4], "alpha": 0.05,
         "claims": ["headwise-lowers-loss"]}))
    changed = run_cli(place, "sweep", "decide", "--until-decided", "--max-seeds", "6",
                      timeout=120)
    assert changed.returncode != 0
    assert "already runs until decided with at most 4 seeds" in changed.stderr
    assert "--max-seeds 6 would change the alpha" in changed.stderr
    search = run_cli(place, "sweep", "searching", "--until-decided", timeout=120)
    assert search.returncode != 0 and "needs a grid sweep" in search.stderr
    alone = run_cli(place, "sweep", "decide", "--max-seeds", "6", timeout=120)
    assert alone.returncode != 0 and "only applies with --until-decided" in alone.stderr
