"""One run end to end on the built-in corpus: loss falls, MLflow holds every measurement once, a
resumed run equals an uninterrupted one and writes no step twice, a retried run keeps no sign
of its failure but its history, Ctrl-C stops at a step boundary, divergence is a result, bad
input is a clear error."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from built_once import this_run
from mlflow.tracking import MlflowClient

from gatelab.metrics import is_declared
from gatelab.registry.loader import load_variant
from gatelab.run_summary import RunSummary
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import resolve_setting
from gatelab.runners.run.tracking import TrackingError
from gatelab.runners.run.train import Progress, train

REPO = Path(__file__).resolve().parents[3]
SHORT = {"steps": 40, "eval_every": 20, "checkpoint_every": 10, "warmup_steps": 5,
         "batch_size": 8, "seq_len": 64, "eval_batches": 2, "measure_batches": 1}


def resources(tmp: Path, name: str = "run") -> Resources:
    """A run's own store and work dir under ``tmp``, copies of the suite's migrated empty store
    and the corpus's data cache (``tests/built_once.py``)."""
    this_run().data_cache(tmp / name / "cache")
    return Resources(threads=1, tracking_uri=this_run().mlflow_store(tmp / f"{name}.db"),
                     work_dir=tmp / name, experiment="test")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Resources]:
    tmp = tmp_path_factory.mktemp("finished")
    res = resources(tmp)
    result = train(load_variant("g1-elementwise"), load_recipe("tiny", SHORT), res)
    return result, res


def test_a_short_run_finishes_and_its_loss_falls(finished: tuple) -> None:
    result, res = finished
    assert result.status == "finished"
    client = MlflowClient(res.tracking_uri)
    history = [m.value for m in client.get_metric_history(result.run_id, "train_loss")]
    assert len(history) == SHORT["steps"]
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5 - 0.5


def test_every_measurement_is_in_mlflow(finished: tuple) -> None:
    result, res = finished
    run = MlflowClient(res.tracking_uri).get_run(result.run_id)
    metrics = run.data.metrics
    for key in ("train_loss", "val_loss", "val_ppl", "val_bpb", "val_loss_ctx1x",
                "val_loss_ctx2x", "val_loss_ctx4x", "f_attn", "f_attn.layer00", "m_act",
                "m_act.layer03", "gate_score.mean", "gate_score.frac_below_0.01",
                "gate_score.frac_below_0.1", "gate_score.mean.layer00", "loss_spikes",
                "spike_score", "max_grad_norm", "tokens_per_s", "train_time_s", "lr",
                "flops_per_token", "achieved_flops", "peak_rss_gb", "measure_time_s"):
        assert key in metrics, key
        assert math.isfinite(metrics[key]), key
    assert "mfu" not in metrics and "peak_device_mem_gb" not in metrics  # a CPU has no peak
    assert [k for k in metrics if not is_declared(k) and not k.startswith("system/")] == []
    summary = RunSummary.from_metrics(metrics, strict=False)  # read back as a skipped rerun is
    assert summary.to_metrics() == {k: v for k, v in metrics.items() if is_declared(k)
                                    and k not in ("train_loss", "lr", "grad_norm", "loss_spike")}
    assert metrics["achieved_flops"] == pytest.approx(
        metrics["tokens_per_s"] * metrics["flops_per_token"])
    assert metrics["measure_time_s"] > 0
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-6)
    assert 0 < metrics["f_attn"] < 1 and 0 < metrics["gate_score.mean"] < 1
    client = MlflowClient(res.tracking_uri)
    for key in ("f_attn", "m_act", "f_attn.layer03"):  # also during training, at evaluations
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [20, 40], key
    for key in ("val_loss", "val_ppl", "val_bpb"):  # the final step's once, from the summary
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [20, 40], key
    tags = run.data.tags
    assert tags["gatelab.status"] == "finished" and run.info.status == "FINISHED"
    assert tags["gatelab.variant"] == "g1-elementwise"
    spec = load_variant("g1-elementwise")
    setting = resolve_setting(spec, load_recipe("tiny", SHORT), res.numerics())
    assert tags["gatelab.run_hash"] == setting.run_hash
    assert tags["gatelab.setting_hash"] == setting.identity.setting_hash
    assert tags["gatelab.lr_setting_hash"] == setting.identity.lr_setting_hash
    assert (tags["gatelab.device"], tags["gatelab.precision"], tags["gatelab.kernel"]) == (
        "cpu", "fp32", "sdpa")
    assert tags["gatelab.torch_version"].startswith("2.")
    assert len(tags["gatelab.git_commit"]) in (40, 7) and tags["gatelab.git_dirty"] in (
        "true", "false")
    assert run.data.params["spec.gate.position"] == "G1"
    assert run.data.params["recipe.lr"] == "0.003"
    artifacts = {a.path for a in MlflowClient(res.tracking_uri).list_artifacts(result.run_id)}
    assert {"config.json", "summary.json", "internals.npz", "identity.json"} <= artifacts
    local = MlflowClient(res.tracking_uri).download_artifacts(result.run_id, "internals.npz",
                                                              str(res.work_dir / "dl"))
    with np.load(local) as arrays:
        assert arrays["gate_hist"].shape[0] == arrays["attn_maps"].shape[0] == 4  # layers
        assert arrays["f_attn"] == pytest.approx(
            [metrics[f"f_attn.layer{i:02d}"] for i in range(4)])


def test_a_finished_hash_is_not_trained_again(finished: tuple) -> None:
    result, res = finished
    again = train(load_variant("g1-elementwise"), load_recipe("tiny", SHORT), res)
    assert again.skipped and again.run_id == result.run_id and again.status == "finished"


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path,
                                                           finished: tuple) -> None:
    reference, ref_res = finished
    spec, recipe = load_variant("g1-elementwise"), load_recipe("tiny", SHORT)
    res = resources(tmp_path, "crash")

    def crash_at_25(p: Progress) -> None:
        if p.step == 25:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, recipe, res, on_progress=crash_at_25)
    client = MlflowClient(res.tracking_uri)
    crashed = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert crashed.data.tags["gatelab.status"] == "failed" and crashed.info.status == "FAILED"
    assert "simulated crash" in crashed.data.tags["gatelab.failure"]

    resumed = train(spec, recipe, res)  # continues from the checkpoint at step 20
    assert resumed.status == "finished" and resumed.run_id == crashed.info.run_id
    assert resumed.summary.val_loss == reference.summary.val_loss
    ref_client = MlflowClient(ref_res.tracking_uri)
    ref_losses = {m.step: m.value for m in ref_client.get_metric_history(reference.run_id,
                                                                         "train_loss")}
    losses = {m.step: m.value for m in client.get_metric_history(resumed.run_id, "train_loss")}
    assert losses[SHORT["steps"]] == ref_losses[SHORT["steps"]]
    assert len(client.search_runs([crashed.info.experiment_id])) == 1
    # The crash flushed steps 21-25, which the resume from step 20 replayed: written once.
    history = client.get_metric_history(resumed.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, SHORT["steps"] + 1))
    # A retry that finishes keeps no sign of its failure but the history.
    run = client.get_run(resumed.run_id)
    assert "gatelab.failure" not in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(resumed.run_id)}
    assert "error.txt" not in artifacts and "failures.json" in artifacts


def test_ctrl_c_checkpoints_and_the_same_call_resumes(tmp_path: Path, finished: tuple) -> None:
    reference, _ = finished
    spec, recipe = load_variant("g1-elementwise"), load_recipe("tiny", SHORT)
    res = resources(tmp_path, "interrupt")

    def ctrl_c_at_13(p: Progress) -> None:
        if p.step == 13:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        train(spec, recipe, res, on_progress=ctrl_c_at_13)
    client = MlflowClient(res.tracking_uri)
    [stopped] = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert stopped.info.status == "KILLED" and stopped.data.tags["gatelab.status"] == "interrupted"
    assert stopped.data.tags["gatelab.interrupted_step"] == "13"
    assert stopped.data.tags["gatelab.interrupted_by"] == "SIGINT"
    steps: list[int] = []
    resumed = train(spec, recipe, res, on_progress=lambda p: steps.append(p.step))
    assert steps[0] == 14  # the step boundary after the signal, checkpointed
    assert resumed.summary.val_loss == reference.summary.val_loss
    assert "gatelab.interrupted_step" not in client.get_run(resumed.run_id).data.tags


def test_an_interruption_mid_step_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised inside a step (not a signal at its boundary) leaves the state
    half updated: the checkpoint before it stays, and the resume writes no step twice."""
    spec, recipe = load_variant("g1-elementwise"), load_recipe("tiny", SHORT)
    res = resources(tmp_path, "mid-step")

    def interrupt_in_13(p: Progress) -> None:
        if p.step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, recipe, res, on_progress=interrupt_in_13)
    steps: list[int] = []
    resumed = train(spec, recipe, res, on_progress=lambda p: steps.append(p.step))
    assert steps[0] == 11  # from the checkpoint at step 10
    client = MlflowClient(res.tracking_uri)
    history = client.get_metric_history(resumed.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, SHORT["steps"] + 1))


def test_an_absurd_learning_rate_ends_as_diverged_not_a_crash(tmp_path: Path) -> None:
    res = resources(tmp_path)
    recipe = load_recipe("tiny", {**SHORT, "lr": 10.0})  # the largest LR a recipe allows
    result = train(load_variant("baseline"), recipe, res)
    assert result.status == "diverged"
    assert 1 <= result.summary.diverged_step <= SHORT["steps"]
    run = MlflowClient(res.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["gatelab.status"] == "diverged"
    assert run.data.tags["gatelab.diverged_step"] == str(result.summary.diverged_step)


def test_an_unreachable_tracking_server_is_named(tmp_path: Path) -> None:
    res = replace(resources(tmp_path), tracking_uri="http://127.0.0.1:9")
    with pytest.raises(TrackingError, match=r"http://127.0.0.1:9 is unreachable"):
        train(load_variant("baseline"), load_recipe("tiny", SHORT), res)


OPEN_STORE = """
import sys
from gatelab.runners.run.tracking import RunTracker
client, _ = RunTracker.client_for(sys.argv[1])
client.create_experiment(sys.argv[2])
"""


def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """MLflow creates a new SQLite store's tables on first use; without the lock in
    ``RunTracker.client_for`` two processes doing it at once can fail in alembic."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri, f"e{i}"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(outputs)
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {f"e{i}" for i in range(4)} <= names


def test_a_bad_data_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus.txt"
    recipe = load_recipe("tiny", {**SHORT, "data.source": str(missing)})
    with pytest.raises(FileNotFoundError, match="no-such-corpus.txt"):
        train(load_variant("baseline"), recipe, resources(tmp_path))


def test_a_bad_recipe_field_is_named() -> None:
    from gatelab.registry.errors import SpecError

    with pytest.raises(SpecError, match="lr: expected a number, got 'fast'"):
        load_recipe("tiny", {"lr": "fast"})
    with pytest.raises(SpecError, match="size: 'tinny' is not a size preset"):
        load_recipe("tiny", {"size": "tinny"})
