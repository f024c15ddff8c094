"""The ``long-context`` sweep end to end on a local Ray with tiny overrides: train -> extend (a
longer context, another RoPE base) -> evaluate under YaRN without training, each stage its own
run linked to its parent; a rerun runs nothing; the report's loss-by-position table and plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from test_sweep import REPO, ray_env

from gatelab.contract import Tag
from gatelab.dashboards import load

pytestmark = pytest.mark.slow

TINY_STAGES = ("stages=[{name: extend, overrides: {steps: 6, seq_len: 64, warmup_steps: 1, "
               "rope_base: 1.0e+6}}, {name: yarn, overrides: {steps: 0, "
               "yarn: {factor: 4, original_len: 64}}}]")
TINY = ["overrides.steps=20", "overrides.batch_size=4", "overrides.seq_len=32",
        "overrides.warmup_steps=2", "overrides.eval_every=10", "overrides.checkpoint_every=10",
        "overrides.eval_batches=2", "overrides.measure_batches=1",
        "overrides.data.vocab_size=512", "seeds=[0]", "resources.cpus=1", "resources.gpus=0",
        TINY_STAGES]


def gatelab(tmp_path: Path, *args: str, sets: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gatelab", *args, "--tracking-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}"]
    if args[0] == "sweep":
        command += ["--sweeps", str(REPO / "sweeps.yaml"), "--work-dir", str(tmp_path / "work"),
                    "--no-progress"]
    for item in sets or []:
        command += ["--set", item]
    return subprocess.run(command, cwd=tmp_path, env=ray_env(), capture_output=True, text=True,
                          timeout=900)


@pytest.mark.usefixtures("mlflow_uri")  # a copy of the migrated empty store
def test_train_extend_and_yarn_stages_each_a_run_linked_to_its_parent(tmp_path: Path) -> None:
    result = gatelab(tmp_path, "sweep", "long-context", sets=TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sweep long-context: 6 runs, 0 already recorded, 6 to run" in result.stderr
    assert "stage" in result.stdout and "extend" in result.stdout and "yarn" in result.stdout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = load("long-context", tracking_uri=uri)
    frame = runs.frame
    assert frame.height == 6 and set(frame["status"].to_list()) == {"finished"}
    assert frame["run_hash"].n_unique() == 6
    client = MlflowClient(tracking_uri=uri)
    by_hash = {r["run_hash"]: r for r in frame.iter_rows(named=True)}
    for variant in ("baseline", "g1-elementwise"):
        mine = {r["stage"]: r for r in by_hash.values() if r["variant"] == variant}
        assert set(mine) == {None, "extend", "yarn"}
        trained, extended, yarn = mine[None], mine["extend"], mine["yarn"]
        for child, parent in ((extended, trained), (yarn, extended)):
            tags = client.get_run(child["run_id"]).data.tags
            assert tags[Tag.PARENT_HASH] == parent["run_hash"]
            assert tags[Tag.PARENT_RUN_ID] == parent["run_id"]
            assert "mlflow.parentRunId" not in tags or (
                tags["mlflow.parentRunId"] != parent["run_id"])
        # The changed RoPE base and YaRN are in the model each stage built and recorded.
        assert trained["backbone.rope_base"] == 10_000.0
        assert extended["backbone.rope_base"] == yarn["backbone.rope_base"] == 1e6
        assert yarn["recipe.yarn.factor"] == 4.0 and yarn["recipe.steps"] == 0
        assert (trained["recipe.seq_len"], extended["recipe.seq_len"]) == (32, 64)
        assert yarn["tokens"] == 0  # evaluated, not trained
        # The parents logged their weights for the stages; the last stage has no child.
        assert "final_weights.pt" in {f.path for f in client.list_artifacts(trained["run_id"])}
        assert "final_weights.pt" in {f.path for f in client.list_artifacts(extended["run_id"])}
        assert "final_weights.pt" not in {f.path for f in client.list_artifacts(yarn["run_id"])}
    # Each stage is a setting of its own, shared by the two variants (paired comparisons).
    assert frame.group_by("setting_id").len()["len"].to_list() == [2, 2, 2]

    table = runs.loss_by_position()
    assert table["stage"].unique(maintain_order=True).to_list() == ["train", "extend", "yarn"]
    assert sorted(table["multiple"].unique().to_list()) == [1, 2, 4, 8]
    assert sorted(table["bucket"].unique().to_list()) == list(range(8))
    assert table.height == 3 * 2 * 4 * 8
    assert table.filter(pl.col("stage") == "extend")["eval_len"].max() == 8 * 64
    assert table["loss"].is_finite().all()

    again = gatelab(tmp_path, "sweep", "long-context", sets=TINY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to run: every run of this sweep is already recorded" in again.stderr

    out = tmp_path / "report"
    report = gatelab(tmp_path, "report", "long-context", "--out", str(out), "--no-attach")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Loss by position (long context, Table 5)" in (out / "report.md").read_text()
    assert (out / "plots" / "position_loss.png").stat().st_size > 0
    assert pl.read_csv(out / "tables" / "loss_by_position.csv").height == 3 * 2 * 4

    # The shipped sizes: seed 0's runs (each stage too) were recorded above under other
    # hashes, so they are stale; seed 1's are new.
    plan = gatelab(tmp_path, "sweep", "long-context", "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "12 runs: 6 stale, 6 to run" in plan.stdout and "continues" in plan.stdout
