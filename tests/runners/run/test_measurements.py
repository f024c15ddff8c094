"""The paper's measurements on hand-built cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.runners.run.measurements import (
    HIST_BINS,
    MAP_HEADS,
    GateScoreStats,
    SpikeDetector,
    diverged,
    first_token_attention,
    max_abs_activation,
    measure_internals,
)


def test_attending_only_to_the_first_token_gives_f_attn_1() -> None:
    probs = torch.zeros(2, 3, 5, 5)
    probs[..., 0] = 1.0
    assert first_token_attention(probs) == pytest.approx(1.0)


def test_uniform_causal_attention_gives_the_mean_of_1_over_position() -> None:
    T = 6
    probs = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    expected = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)  # query 0 excluded
    assert first_token_attention(probs[None, None]) == pytest.approx(expected)


def test_max_abs_activation_sees_negative_outliers() -> None:
    h = torch.zeros(1, 4, 8)
    h[0, 2, 3] = -1053.0
    assert max_abs_activation(h) == 1053.0


def test_gate_score_stats_fractions() -> None:
    stats = GateScoreStats()
    stats.add(torch.tensor([0.005, 0.05, 0.5, 1.0]))
    assert stats.as_dict() == pytest.approx(
        {"mean": (0.005 + 0.05 + 0.5 + 1.0) / 4, "frac_below_0.01": 0.25, "frac_below_0.1": 0.5}
    )


def test_gate_score_histogram_counts_each_score_in_its_bin() -> None:
    stats = GateScoreStats()
    stats.add(torch.tensor([-0.5, 0.0, 0.019, 0.03, 0.5, 0.999, 1.0, 1.5, 2.0]))
    hist = stats.hist
    assert len(hist) == HIST_BINS + 2 and sum(hist) == 9
    assert hist[0] == 1 and hist[-1] == 2  # below 0; above 1
    assert hist[1] == 2  # [0, 0.02): 0.0 and 0.019
    assert hist[2] == 1  # [0.02, 0.04)
    assert hist[1 + HIST_BINS // 2] == 1  # 0.5
    assert hist[HIST_BINS] == 2  # the last bin is closed: 0.999 and 1.0
    merged = stats.merged(stats)
    assert merged.hist == [2 * h for h in hist] and merged.count == 18


def test_zero_queries_give_uniform_attention_and_gate_scores_are_collected() -> None:
    torch.manual_seed(0)
    model = build_model(load_variant("g1-elementwise"), "tiny", dtype=torch.float64)
    idx = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.wq.weight.zero_()  # q = 0: every causal prefix is attended uniformly
    internals = measure_internals(model, [idx])
    T = idx.shape[1]
    uniform = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    assert internals.f_attn == pytest.approx([uniform] * len(model.blocks))
    assert len(internals.gate_scores) == len(model.blocks)
    overall = internals.gate_overall()
    assert overall is not None and 0.0 < overall["mean"] < 1.0
    assert "gate_score.mean" in internals.metrics()
    arrays = internals.arrays()
    n_layers, n_heads = len(model.blocks), model.blocks[0].attn.n_heads
    assert arrays["gate_hist"].shape == (n_layers, HIST_BINS + 2)
    assert arrays["gate_hist"].sum(axis=1).tolist() == [g.count for g in internals.gate_scores]
    maps = arrays["attn_maps"]
    assert maps.shape == (n_layers, min(MAP_HEADS, n_heads), T, T)
    assert maps[0, 0, 3, :4] == pytest.approx([0.25] * 4) and maps[0, 0, 3, 4:].sum() == 0


def test_f_attn_is_1_when_every_query_attends_only_to_the_first_token() -> None:
    model = build_model(load_variant("baseline"), "tiny", dtype=torch.float64)
    T = 12
    idx = torch.full((1, T), 5)
    idx[0, 0] = 9
    with torch.no_grad():
        model.embed.weight[5].zero_()
        model.embed.weight[5, 1] = 1.0
        model.embed.weight[9].zero_()
        model.embed.weight[9, :2] = 1.0  # only the first token has a component 0
        for block in model.blocks:
            attn = block.attn
            attn.q_norm, attn.k_norm = torch.nn.Identity(), torch.nn.Identity()
            attn.wq.weight.zero_()
            attn.wq.weight[:, 1] = 1.0  # every query is positive along all dims
            attn.wk.weight.zero_()
            attn.wk.weight[:, 0] = 1000.0  # only the first token's key is non-zero
            attn.wo.weight.zero_()  # keep the residual stream equal to the embeddings
            block.ffn.w_down.weight.zero_()
    internals = measure_internals(model, [idx])
    assert internals.f_attn_mean == pytest.approx(1.0, abs=1e-9)
    assert internals.gate_overall() is None
    assert internals.m_act == pytest.approx([1.0] * len(model.blocks))


def test_spike_detector_counts_a_jump_and_its_excess() -> None:
    detector = SpikeDetector(window=10, sigma=4.0, min_nats=0.1)
    losses = [3.0 + 0.01 * (i % 2) for i in range(20)] + [5.0] + [3.0] * 5
    flags = [detector.update(x) for x in losses]
    assert flags.count(True) == 1 and flags[20]
    assert detector.score == pytest.approx(5.0 - 3.005, abs=1e-9)


def test_spike_detector_ignores_small_noise_and_restores_state() -> None:
    detector = SpikeDetector(window=5, sigma=4.0, min_nats=0.1)
    for x in [2.0, 2.05, 1.95, 2.02, 1.98, 2.04, 2.03]:
        assert not detector.update(x)
    clone = SpikeDetector(window=5, sigma=4.0, min_nats=0.1)
    clone.load_state_dict(detector.state_dict())
    assert clone.update(9.0) and detector.update(9.0)


def test_divergence_rules() -> None:
    assert diverged(math.nan, 3, warmup=10, first_loss=8.0, margin=1.0) is not None
    assert diverged(math.inf, 30, warmup=10, first_loss=8.0, margin=1.0) is not None
    assert diverged(9.5, 5, warmup=10, first_loss=8.0, margin=1.0) is None  # still warming up
    assert "more than 1.0 nats" in (diverged(9.5, 12, warmup=10, first_loss=8.0, margin=1.0) or "")
    assert diverged(7.0, 12, warmup=10, first_loss=8.0, margin=1.0) is None
