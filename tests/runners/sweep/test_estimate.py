"""A plan's cost: training FLOPs from built models (an MoE counts the experts a token is routed
to), time from measured throughput, else an assumed MFU on CUDA, else an assumed CPU FLOP/s, so
a larger model takes longer; memory as a run estimates its own, against the machine's."""

from __future__ import annotations

import pytest

from gatelab.model.attention_ops import Kernel
from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.runners.run.capacity import GIB, CapacityError, estimate_memory
from gatelab.runners.run.flops import train_flops_per_token
from gatelab.runners.run.numerics import DeviceType, Numerics, Precision
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.sweep.plan import (
    ASSUMED_MFU,
    ASSUMED_PEAK,
    CPU_FLOPS,
    PlannedRun,
    check_runs_fit,
    estimate,
    make_plan,
    memory_notes,
)

CUDA = Numerics(DeviceType.CUDA, Precision.BF16, Kernel.SDPA, tf32=True)
CPU = Numerics(DeviceType.CPU, Precision.FP32, Kernel.SDPA)


def _plan(numerics: Numerics, size: str) -> list[PlannedRun]:
    pairs = [(load_variant(v), load_recipe("tiny", {"size": size, "steps": 10}))
             for v in ("baseline", "g1-elementwise")]
    return make_plan(pairs, {}, numerics)


def _flops(p: PlannedRun) -> float:
    return train_flops_per_token(build_model(p.spec, p.recipe.size, "meta"), p.recipe.seq_len)


def test_a_cuda_plan_assumes_an_mfu_and_counts_only_routed_experts() -> None:
    plan = _plan(CUDA, "tiny-moe")
    est = estimate(plan, {}, parallel=1)
    per_token = [train_flops_per_token(build_model(p.spec, "tiny-moe", "meta"), p.recipe.seq_len)
                 for p in plan]
    assert est.flops == pytest.approx(sum(f * p.tokens for f, p in zip(per_token, plan,
                                                                        strict=True)))
    assert est.throughput_source == f"assumed {ASSUMED_MFU:.0%} MFU of an H200"
    assert est.seconds_serial == pytest.approx(sum(
        p.tokens * f / (ASSUMED_MFU * ASSUMED_PEAK) for f, p in zip(per_token, plan,
                                                                     strict=True)))
    # Every expert's parameters would overstate an MoE's cost (top-k of n experts run).
    every = sum(q.numel() for q in build_model(plan[0].spec, "tiny-moe", "meta").parameters())
    assert per_token[0] < 6 * every


def test_a_cpu_plan_without_measurements_assumes_a_flop_rate() -> None:
    plan = _plan(CPU, "tiny")
    est = estimate(plan, {}, parallel=2)
    assert est.throughput_source == "assumed 5e+10 FLOP/s of a CPU run"
    assert est.seconds_serial == pytest.approx(sum(p.tokens * _flops(p) for p in plan)
                                               / CPU_FLOPS)
    assert est.seconds_estimate == pytest.approx(est.seconds_serial / 2)
    # About the tiny rate the estimate used before it followed the FLOPs: ~6,000 tokens/s.
    assert 4_000 < sum(p.tokens for p in plan) / est.seconds_serial < 8_000


def test_a_paper_size_on_a_cpu_costs_days_and_does_not_fit() -> None:
    plan = _plan(CPU, "paper-moe-15a2b")
    est = estimate(plan, {}, parallel=2)
    tiny = estimate(_plan(CPU, "tiny"), {}, parallel=2)
    assert est.seconds_serial == pytest.approx(sum(p.tokens * _flops(p) for p in plan)
                                               / CPU_FLOPS)
    assert est.seconds_estimate > 1000 * tiny.seconds_estimate
    assert est.seconds_estimate / 60 > 60  # hours, where the old estimate said 0.1 min
    needs = [estimate_memory(p.setting).total_bytes for p in plan]
    assert est.memory_bytes == max(needs) > 200 * GIB
    free = 24 * GIB
    with pytest.raises(CapacityError, match=r"sweep run baseline at size paper-moe-15a2b "
                       r"needs at least 2\d\d\.\d GiB .* but the machine has 24\.0 GiB \(RAM\)"):
        check_runs_fit(plan, free, "RAM")
    (note,) = memory_notes(plan, 2, free, "RAM")
    assert "the machine has 24.0 GiB (RAM)" in note and "the sweep will refuse to start" in note


def test_more_parallel_runs_than_fit_at_once_are_noted() -> None:
    plan = _plan(CPU, "tiny")
    need = estimate(plan, {}).memory_bytes
    assert memory_notes(plan, 2, 2 * need, "RAM") == []
    (note,) = memory_notes(plan, 2, need + need // 2, "RAM")
    assert note.startswith("2 runs at once need at least") and "at most 1 fit at once" in note
