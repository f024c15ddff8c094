"""A run that its machine cannot hold is refused before anything is allocated, naming the memory
it needs and the memory the machine has; the estimate counts the built model's parameters and
stays near what autograd actually keeps; thread counts are bounded by the cores."""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.runners.run.capacity import (
    STATE_BYTES_PER_PARAM,
    CapacityError,
    check_memory,
    check_threads,
    estimate_memory,
    usable_cores,
)
from gatelab.runners.run.loss import lm_loss
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import RunSetting, resolve_setting
from gatelab.runners.run.train import train

CPU = resolve_numerics("cpu")


def _setting(variant: str, overrides: dict[str, object]) -> RunSetting:
    return resolve_setting(load_variant(variant), load_recipe("tiny", overrides), CPU)


def _autograd_saved_bytes(setting: RunSetting, batch: int) -> int:
    """What autograd keeps for one forward of ``batch`` sequences, on the meta device: every
    saved tensor's storage that is not a parameter, counted once."""
    r = setting.recipe
    model = build_model(setting.spec, setting.size, "meta", vocab_size=r.data.vocab_size)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    x = torch.zeros(batch, r.seq_len, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model, x, x)
    return sum(saved.values())


@pytest.mark.parametrize("variant", ["baseline", "g1-elementwise", "g1-headwise",
                                     "sandwich-norm", "sigmoid-attention", "more-q-heads"])
def test_the_activation_count_is_near_what_autograd_keeps(variant: str) -> None:
    # Short sequences: on the meta device SDPA saves its weights, which the CPU kernel does not.
    setting = _setting(variant, {"size": "gpu-20m", "seq_len": 32, "batch_size": 2,
                                 "micro_batch_size": 2, "data.vocab_size": 8192})
    est = estimate_memory(setting)
    assert est.micro_batch == 2
    ratio = est.activation_bytes / _autograd_saved_bytes(setting, 2)
    assert 0.75 < ratio < 1.25, ratio


def test_parameters_are_counted_from_the_built_model_with_the_data_vocabulary() -> None:
    setting = _setting("g1-elementwise", {"size": "gpu-20m", "data.vocab_size": 4096})
    model = build_model(setting.spec, "gpu-20m", "meta", vocab_size=4096)
    est = estimate_memory(setting)
    assert est.params == model.num_params()
    assert est.state_bytes == STATE_BYTES_PER_PARAM * model.num_params()
    as_bytes = estimate_memory(_setting("g1-elementwise", {"size": "gpu-20m",
                                                           "data.tokenizer": "bytes"}))
    assert as_bytes.params == build_model(setting.spec, "gpu-20m", "meta",
                                          vocab_size=257).num_params()


def test_the_activations_follow_the_micro_batch() -> None:
    whole = estimate_memory(_setting("baseline", {"batch_size": 8, "micro_batch_size": 8}))
    quarter = estimate_memory(_setting("baseline", {"batch_size": 8, "micro_batch_size": 2}))
    assert (whole.micro_batch, quarter.micro_batch) == (8, 2)
    assert whole.activation_bytes == pytest.approx(4 * quarter.activation_bytes)
    assert whole.state_bytes == quarter.state_bytes


def test_a_refusal_names_both_numbers_and_a_micro_batch_that_fits() -> None:
    setting = _setting("baseline", {"size": "gpu-20m", "batch_size": 64, "seq_len": 1024,
                                    "micro_batch_size": 64})
    est = estimate_memory(setting)
    free = est.state_bytes + 5 * est.activation_bytes_per_sequence
    with pytest.raises(CapacityError) as info:
        check_memory("baseline at size gpu-20m", est, free, "available RAM on this machine")
    message = str(info.value)
    assert message.startswith(f"baseline at size gpu-20m needs at least "
                              f"{est.total_bytes / 2**30:,.1f} GiB")
    assert f"the machine has {free / 2**30:,.1f} GiB (available RAM on this machine)" in message
    assert "--set micro_batch_size=" in message
    fits = int(message.split("--set micro_batch_size=")[1].split(",")[0])
    smaller = estimate_memory(dataclasses.replace(setting, recipe=dataclasses.replace(
        setting.recipe, micro_batch_size=fits)))
    assert 1 <= fits <= 5 and smaller.total_bytes <= free
    with pytest.raises(CapacityError, match="use a smaller size"):
        check_memory("x", est, est.state_bytes // 2, "free")
    check_memory("x", est, est.total_bytes, "free")  # what fits passes


def test_paper_moe_is_refused_before_allocating_or_recording(tmp_path: Path) -> None:
    setting = _setting("baseline", {"size": "paper-moe-15a2b"})
    est = estimate_memory(setting)
    if est.total_bytes <= psutil.virtual_memory().available:
        pytest.skip("this machine can hold a 15B-parameter run")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(CapacityError) as info:
        train(load_variant("baseline"), setting.recipe,
              Resources(device="cpu", tracking_uri=uri, work_dir=tmp_path, experiment="t"),
              size="paper-moe-15a2b")
    grown_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    message = str(info.value)
    assert message.startswith("baseline at size paper-moe-15a2b needs at least ")
    assert f"{est.params:,} parameters" in message and est.params > 14e9
    assert "GiB (available RAM on this machine)" in message
    assert "use a smaller size" in message
    assert grown_gib < 1.0  # the 15B model (~56 GiB of fp32 weights) was never built
    exp = MlflowClient(uri).get_experiment_by_name("t")
    assert exp is None or not MlflowClient(uri).search_runs([exp.experiment_id])


@pytest.mark.parametrize("threads", [-1, 0, usable_cores() + 1])
def test_a_thread_count_out_of_range_is_refused(threads: int) -> None:
    with pytest.raises(CapacityError, match=f"--threads {threads} is out of range: torch's CPU "
                       f"threads must be >= 1 and at most this machine's {usable_cores()}"):
        check_threads(threads)


def test_a_thread_count_in_range_passes() -> None:
    check_threads(None)
    check_threads(1)
    check_threads(usable_cores())


def test_bad_threads_create_no_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(CapacityError, match="--threads -1"):
        train(load_variant("baseline"), load_recipe("tiny", {"steps": 1}),
              Resources(threads=-1, tracking_uri=uri, work_dir=tmp_path, experiment="t"))
    exp = MlflowClient(uri).get_experiment_by_name("t")
    assert exp is None or not MlflowClient(uri).search_runs([exp.experiment_id])
