"""The GPU size presets and the GPU sweeps' budgets: the sizes are what their comments say, every
variant of their sweeps builds at them, and each sweep's header states the FLOPs and H200-hours
its runs cost (recomputed here from built modules)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from gatelab.model.build import build_model, resolve_backbone
from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.registry.presets import PRESETS
from gatelab.registry.schema import Architecture
from gatelab.runners.run.flops import train_flops_per_token
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.sweep.ray_tasks import task_options
from gatelab.runners.sweep.spec import get_sweep, selected_variants
from gatelab.shipped import sweeps_file

H200_BF16_DENSE = 989e12
ASSUMED_MFU = 0.35
"""The throughput the sweeps' headers assume (they say so)."""
GPU_SWEEPS = ("table1-gpu", "table4-gpu", "lr-tolerance-gpu", "sink-onset")


def built(backbone: Backbone, arch: Architecture | None = None) -> GatedLM:
    with torch.device("meta"):
        return GatedLM(backbone, arch or Architecture())


def non_embedding(size: str) -> int:
    bb = PRESETS[size]
    return built(bb).num_params() - bb.vocab_size * bb.d_model


@pytest.mark.parametrize(("size", "low", "high"), [
    ("gpu-20m", 19e6, 21e6), ("gpu-125m", 120e6, 130e6),
    ("gpu-20m-moe", 60e6, 65e6), ("gpu-125m-moe", 400e6, 420e6)])
def test_gpu_sizes_are_the_sizes_they_are_named(size: str, low: float, high: float) -> None:
    assert low < non_embedding(size) < high
    bb = PRESETS[size]
    assert bb.qk_norm and bb.tie_embeddings and bb.n_kv_heads < bb.n_heads  # Qwen3-style, GQA


@pytest.mark.parametrize("dense", ["gpu-20m", "gpu-125m"])
def test_an_moe_size_activates_its_dense_sizes_ffn(dense: str) -> None:
    moe = PRESETS[f"{dense}-moe"]
    assert moe.moe is not None
    assert moe.moe.top_k * moe.moe.expert_hidden == PRESETS[dense].ffn_hidden
    assert dataclasses.replace(moe, moe=None) == PRESETS[dense]


def active_flops_per_token(variant: str, size: str, seq_len: int) -> float:
    """Training FLOPs of one token as the sweep planner and the runs count them
    (``runners/run/flops.py``: the experts a token is routed to, attention over the whole
    sequence), from the model built on the meta device."""
    return train_flops_per_token(build_model(variant, size, "meta"), seq_len)


def header_of(name: str) -> str:
    """The comment block right above a sweep in sweeps.yaml."""
    lines = sweeps_file().read_text().splitlines()
    at = lines.index(f"{name}:")
    block = []
    for line in reversed(lines[:at]):
        if not line.startswith("#"):
            break
        block.insert(0, line.lstrip("# "))
    return " ".join(block)


@pytest.mark.parametrize("name", GPU_SWEEPS)
def test_a_gpu_sweeps_header_states_its_cost(name: str) -> None:
    sweep = get_sweep(name)
    recipe = load_recipe(sweep.recipe, sweep.overrides)
    tokens = recipe.total_steps() * recipe.batch_size * recipe.seq_len
    per_setting = len(sweep.seeds) * max(1, len(sweep.lrs)) * tokens
    flops = sum(active_flops_per_token(v.id, recipe.size, recipe.seq_len)
                for v in selected_variants(sweep)) * per_setting
    hours = flops / (ASSUMED_MFU * H200_BF16_DENSE) / 3600
    header = header_of(name)
    stated = re.search(r"(\d\.\d+)e\+?(\d+) FLOPs", header)
    assert stated, header
    assert float(f"{stated[1]}e{stated[2]}") == pytest.approx(flops, rel=0.01)
    stated_hours = re.search(r"~(\d\.\d) H200-hours", header)
    assert stated_hours, header
    assert float(stated_hours[1]) == pytest.approx(hours, abs=0.05)
    assert f"{tokens:,}" in header or f"{tokens / 1e6:.1f}M tokens" in header


def test_the_gpu_sweeps_fit_their_hours() -> None:
    """table1-gpu in about one H200-hour, table4-gpu and lr-tolerance-gpu in about another."""
    def hours(name: str) -> float:
        stated = re.search(r"~(\d\.\d) H200-hours", header_of(name))
        assert stated
        return float(stated[1])

    assert 0.8 <= hours("table1-gpu") <= 1.1
    assert 0.8 <= hours("table4-gpu") + hours("lr-tolerance-gpu") <= 1.1


@pytest.mark.parametrize("name", GPU_SWEEPS)
def test_a_gpu_sweep_asks_for_a_gpu_only_where_one_exists(name: str) -> None:
    res = get_sweep(name).resources
    assert res.gpus > 0
    assert "num_gpus" not in task_options(res, cluster_has_gpus=False)
    assert task_options(res, cluster_has_gpus=True)["num_gpus"] == res.gpus


def test_every_variant_of_the_gpu_sweeps_builds_at_its_size() -> None:
    for name in GPU_SWEEPS:
        sweep = get_sweep(name)
        size = load_recipe(sweep.recipe, sweep.overrides).size
        for spec in selected_variants(sweep):
            bb = resolve_backbone(spec, size)
            assert built(bb, spec.architecture).num_params() > 0, (name, spec.id)
    more_experts = resolve_backbone(load_variant("more-experts"), "gpu-20m-moe")
    assert more_experts.moe is not None and more_experts.moe.n_experts == 20
