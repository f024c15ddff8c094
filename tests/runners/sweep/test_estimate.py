"""A plan's cost: training FLOPs from built models (an MoE counts the experts a token is routed
to), time from measured throughput, else an assumed MFU on CUDA, else the CPU default."""

from __future__ import annotations

import pytest

from gatelab.model.attention_ops import Kernel
from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.runners.run.flops import train_flops_per_token
from gatelab.runners.run.numerics import DeviceType, Numerics, Precision
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.sweep.plan import (
    ASSUMED_MFU,
    ASSUMED_PEAK,
    TINY_CPU_TOKENS_PER_S,
    estimate,
    make_plan,
)

CUDA = Numerics(DeviceType.CUDA, Precision.BF16, Kernel.SDPA, tf32=True)
CPU = Numerics(DeviceType.CPU, Precision.FP32, Kernel.SDPA)


def _plan(numerics: Numerics, size: str) -> list:
    pairs = [(load_variant(v), load_recipe("tiny", {"size": size, "steps": 10}))
             for v in ("baseline", "g1-elementwise")]
    return make_plan(pairs, {}, numerics)


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


def test_a_cpu_plan_without_measurements_uses_the_default_rate() -> None:
    plan = _plan(CPU, "tiny")
    est = estimate(plan, {}, parallel=2)
    assert est.throughput_source == "default"
    assert est.seconds_serial == pytest.approx(sum(p.tokens for p in plan)
                                               / TINY_CPU_TOKENS_PER_S)
    assert est.seconds_estimate == pytest.approx(est.seconds_serial / 2)
