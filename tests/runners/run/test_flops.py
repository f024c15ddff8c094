"""Model FLOPs counted from built models equal the PaLM formula written out by hand; the peak
table finds the right GPU; MFU exists only where a peak is known."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.registry.presets import PRESETS
from gatelab.registry.schema import Granularity
from gatelab.runners.run import flops
from gatelab.runners.run.flops import (
    architecture_flops_per_token,
    forward_flops_per_token,
    peak_flops,
    throughput_metrics,
    train_flops_per_token,
)

T = 128


def _by_hand(moe_active_fraction: float | None = None) -> float:
    """Forward FLOPs per token of the tiny baseline (or tiny-moe), from the backbone."""
    bb = PRESETS["tiny" if moe_active_fraction is None else "tiny-moe"]
    attn = 2 * bb.d_model * bb.n_heads * bb.head_dim + 2 * bb.d_model * bb.n_kv_heads * bb.head_dim
    if bb.moe is None:
        ffn = 3 * bb.d_model * bb.ffn_hidden
    else:
        experts = 3 * bb.moe.n_experts * bb.d_model * bb.moe.expert_hidden
        ffn = bb.d_model * bb.moe.n_experts + experts * bb.moe.top_k / bb.moe.n_experts
    per_layer = 2 * (attn + ffn) + 4 * T * bb.n_heads * bb.head_dim
    return bb.n_layers * per_layer + 2 * bb.d_model * bb.vocab_size  # + the (tied) LM head


def test_the_tiny_baseline_counts_as_the_palm_formula() -> None:
    model = build_model(load_variant("baseline"), "tiny", "meta")
    assert forward_flops_per_token(model, T) == _by_hand()
    assert train_flops_per_token(model, T) == 3 * _by_hand()


def test_an_moe_counts_only_the_experts_a_token_is_routed_to() -> None:
    model = build_model(load_variant("baseline"), "tiny-moe", "meta")
    assert forward_flops_per_token(model, T) == pytest.approx(_by_hand(moe_active_fraction=0.25))


def test_a_gate_adds_its_projection() -> None:
    base = build_model(load_variant("baseline"), "tiny", "meta")
    gated = build_model(load_variant("g1-elementwise"), "tiny", "meta")
    bb = PRESETS["tiny"]
    added = 2 * bb.n_layers * bb.d_model * bb.n_heads * bb.head_dim
    assert forward_flops_per_token(gated, T) - forward_flops_per_token(base, T) == added


def test_a_count_without_a_model_is_kept_by_content_not_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flops, "_TRAIN_FLOPS", {})
    spec = load_variant("g1-elementwise")
    first = architecture_flops_per_token(spec.architecture, "tiny", T)
    assert first == train_flops_per_token(build_model(spec, "tiny", "meta"), T)
    renamed = replace(spec, id="another-id", description="the same model")
    assert architecture_flops_per_token(renamed.architecture, "tiny", T) == first
    assert len(flops._TRAIN_FLOPS) == 1  # one architecture, one count
    gate = spec.architecture.gate
    assert gate is not None
    edited = replace(spec.architecture, gate=replace(gate, granularity=Granularity.HEADWISE))
    assert architecture_flops_per_token(edited, "tiny", T) < first  # an edited spec: counted
    monkeypatch.setitem(PRESETS, "tiny", replace(PRESETS["tiny"], ffn_hidden=320))
    assert architecture_flops_per_token(spec.architecture, "tiny", T) < first  # an edited size
    assert len(flops._TRAIN_FLOPS) == 3


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989.4e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362.05e12), ("NVIDIA L40", 181.05e12), ("NVIDIA A10G", 70e12),
    ("NVIDIA A10", 125e12), ("NVIDIA GeForce RTX 4090", 165.2e12),
    ("Tesla T4", None), ("cpu", None),
])
def test_the_peak_table_finds_the_device(name: str, peak: float | None) -> None:
    assert peak_flops(name) == peak


def test_mfu_only_where_the_peak_is_known() -> None:
    on_gpu = throughput_metrics(1000.0, 2e9, peak=1e15)
    assert on_gpu["achieved_flops"] == 2e12 and on_gpu["mfu"] == pytest.approx(0.002)
    assert "mfu" not in throughput_metrics(1000.0, 2e9, peak=None)
