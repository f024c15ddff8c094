"""The paper's measurements on hand-built cases with known answers."""

from __future__ import annotations

import dataclasses
import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gatelab.model.build import build_model
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.runners.run.measurements import (
    HIST_BINS,
    MAP_HEADS,
    SINK_HEAD_THRESHOLD,
    GateScoreStats,
    Internals,
    SpikeDetector,
    diverged,
    first_token_attention,
    first_token_attention_per_head,
    max_abs_activation,
    measure_internals,
    residual_peak_first,
    sink_heads_fraction,
    value_drain,
)

SMALL = Backbone(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64,
                 vocab_size=50)
NEW_METRICS = ("sink_head_max", "sink_heads_frac", "value_drain", "resid_peak_first")


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
        {"gate_score.mean": (0.005 + 0.05 + 0.5 + 1.0) / 4, "gate_score.frac_below_0.01": 0.25,
         "gate_score.frac_below_0.1": 0.5}
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
    assert overall is not None and 0.0 < overall["gate_score.mean"] < 1.0
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
    assert internals.sink_head_max == pytest.approx([1.0] * len(model.blocks), abs=1e-9)
    assert internals.sink_heads_frac == [1.0] * len(model.blocks)
    assert internals.resid_peak_first == [1.0] * len(model.blocks)  # |e9| = sqrt 2 > |e5| = 1


def _uniform_causal(B: int, H: int, T: int) -> torch.Tensor:
    probs_TS = torch.tril(torch.ones(T, T, dtype=torch.float64))
    return (probs_TS / probs_TS.sum(-1, keepdim=True)).expand(B, H, T, T).clone()


def _with_sink_head(probs_BHTS: torch.Tensor, head: int, share: float) -> torch.Tensor:
    """``head`` puts ``share`` on key 0 from query 1 on, the rest spread evenly over keys
    1..q."""
    out = probs_BHTS.clone()
    T = out.shape[-1]
    for q in range(1, T):
        out[:, head, q, 0] = share
        out[:, head, q, 1:q + 1] = (1 - share) / q
    return out


def test_one_sink_head_is_seen_per_head_and_hidden_by_the_mean() -> None:
    B, H, T = 2, 8, 16
    uniform = sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    layers = [_uniform_causal(B, H, T), _with_sink_head(_uniform_causal(B, H, T), 2, 0.8)]
    assert torch.allclose(layers[1].sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    heads = [first_token_attention_per_head(p) for p in layers]
    assert heads[1].tolist() == pytest.approx([uniform] * 2 + [0.8] + [uniform] * 5)
    assert first_token_attention(layers[1]) < SINK_HEAD_THRESHOLD  # the mean hides it
    assert sink_heads_fraction(heads[0]) == 0.0 and sink_heads_fraction(heads[1]) == 1 / 8
    internals = Internals([h.mean().item() for h in heads], [1.0, 1.0],
                          f_attn_heads=[h.tolist() for h in heads], value_drain=[1.0, 3.0],
                          resid_peak_first=[0.0, 0.5])
    metrics = internals.metrics()
    assert metrics["sink_head_max.layer00"] == pytest.approx(uniform)
    assert metrics["sink_head_max.layer01"] == pytest.approx(0.8)
    assert metrics["sink_head_max"] == pytest.approx((uniform + 0.8) / 2)
    assert (metrics["sink_heads_frac.layer00"], metrics["sink_heads_frac.layer01"]) == (0.0,
                                                                                        1 / 8)
    assert metrics["sink_heads_frac"] == 1 / 16
    assert metrics["value_drain"] == 2.0 and metrics["resid_peak_first.layer01"] == 0.5
    assert internals.arrays()["f_attn_heads"].shape == (2, H)


def test_a_share_at_the_threshold_is_not_a_sink_head() -> None:
    shares = torch.tensor([SINK_HEAD_THRESHOLD, SINK_HEAD_THRESHOLD + 0.01, 0.1, 0.9],
                          dtype=torch.float64)
    assert sink_heads_fraction(shares) == 0.5


def test_internals_without_per_head_shares_log_no_per_head_metrics() -> None:
    internals = Internals([0.1, 0.2], [3.0, 4.0])
    assert not any(k.startswith(NEW_METRICS) for k in internals.metrics())
    assert internals.arrays()["f_attn_heads"].shape == (2, 0)


def test_value_drain_is_the_first_tokens_norm_over_the_others_mean() -> None:
    torch.manual_seed(0)
    direction = torch.randn(2, 6, 2, 4, dtype=torch.float64)
    v = direction / direction.norm(dim=-1, keepdim=True)  # every norm 1
    v[:, 0] *= 5.0
    assert value_drain(v) == pytest.approx(5.0)
    v[:, 0, 1] /= 5.0  # kv head 1 has no drain: the mean over heads is (5 + 1) / 2
    v[:, 1:] *= torch.tensor([1.0, 3.0, 1.0, 3.0, 2.0], dtype=torch.float64)[:, None, None]
    assert value_drain(v) == pytest.approx((5.0 / 2.0 + 1.0 / 2.0) / 2)


def test_residual_peak_first_counts_sequences_peaking_at_token_0() -> None:
    h = torch.ones(4, 6, 3, dtype=torch.float64)
    h[0, 0] = 10.0
    h[1, 0, 2] = -50.0  # a negative outlier is a large norm too
    h[2, 3] = 10.0
    h[3, 5] = 10.0
    assert residual_peak_first(h) == 0.5
    h[2, 0] = 20.0
    assert residual_peak_first(h) == 0.75


def test_every_per_head_metric_is_measured_on_a_built_model() -> None:
    torch.manual_seed(0)
    model = build_model("g1-elementwise", SMALL, dtype=torch.float64)
    batches = [torch.randint(0, SMALL.vocab_size, (3, 10)) for _ in range(2)]
    internals = measure_internals(model, batches)
    metrics = internals.metrics()
    for name in NEW_METRICS:
        assert name in metrics, name
        for i in range(SMALL.n_layers):
            assert f"{name}.layer{i:02d}" in metrics, (name, i)
    for i in range(SMALL.n_layers):
        layer = f"layer{i:02d}"
        assert metrics[f"f_attn.{layer}"] <= metrics[f"sink_head_max.{layer}"] <= 1.0
        assert metrics[f"sink_heads_frac.{layer}"] * SMALL.n_heads in range(SMALL.n_heads + 1)
        assert 0.0 < metrics[f"value_drain.{layer}"] < math.inf
        assert metrics[f"resid_peak_first.{layer}"] * 6 in range(7)  # 6 sequences
    heads = internals.arrays()["f_attn_heads"]
    assert heads.shape == (SMALL.n_layers, SMALL.n_heads)
    assert heads.mean(axis=1) == pytest.approx(internals.f_attn)


def test_value_drain_is_measured_after_a_g2_gate() -> None:
    """Two tokens whose values are equal but whose G2 gate scores are 0.8 and 0.2: the gated
    value of the first token is 4 times the others'."""
    model = build_model("g2-elementwise", SMALL, dtype=torch.float64)
    first, other = 3, 7
    half_d = SMALL.d_model / 2
    with torch.no_grad():
        model.embed.weight[first].zero_()
        model.embed.weight[other].zero_()
        model.embed.weight[first, :2] = torch.tensor([1.0, 1.0])
        model.embed.weight[other, :2] = torch.tensor([1.0, -1.0])  # normed: (±) sqrt(d/2)
        attn = model.blocks[0].attn
        attn.wv.weight[:, 1] = 0.0  # the value ignores component 1: equal for both tokens
        proj = attn.gate_v.logits.proj
        proj.weight.zero_()
        proj.weight[:, 1] = math.log(4.0) / math.sqrt(half_d)  # logits ±ln 4: 0.8 and 0.2
        if proj.bias is not None:
            proj.bias.zero_()
    idx = torch.tensor([[first] + [other] * 7])
    internals = measure_internals(model, [idx])
    assert internals.value_drain[0] == pytest.approx(4.0, rel=1e-4)


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


class LiveTensorBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors that ops create under this mode: each new
    storage counts from the op that makes it until it is freed (a finalizer on the storage,
    whose Python object torch keeps for as long as the storage lives). What existed before
    (the weights) is not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _freed(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() and key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._freed, key)
        return out


def _peak_bytes(n_layers: int, fn: str) -> int:
    torch.manual_seed(0)
    model = build_model(load_variant("g1-elementwise"),
                        dataclasses.replace(SMALL, n_layers=n_layers))
    batch = torch.randint(0, SMALL.vocab_size, (4, 256), generator=torch.Generator().manual_seed(1))
    meter = LiveTensorBytes()
    with torch.no_grad(), meter:
        if fn == "measure":
            measure_internals(model, [batch])
        else:  # every layer's probabilities returned at once
            model(batch, return_probs=True)
    return meter.peak


def test_the_measurement_peak_memory_does_not_grow_with_depth() -> None:
    layer_probs = 4 * 4 * 256 * 256 * 4  # one layer's (B, H, T, T) fp32: 4 MiB
    measured = {n: _peak_bytes(n, "measure") for n in (2, 8)}
    assert measured[8] == pytest.approx(measured[2], rel=0.2)
    assert measured[2] >= layer_probs  # the meter sees a layer's probabilities
    # The meter does see the growth where every layer's probabilities are kept at once.
    kept = {n: _peak_bytes(n, "kept") for n in (2, 8)}
    assert kept[8] - kept[2] >= 5 * layer_probs  # six more layers kept: ~6 x


def test_measuring_layer_by_layer_equals_the_probabilities_the_model_returns() -> None:
    torch.manual_seed(0)
    model = build_model(load_variant("g1-elementwise"), SMALL, dtype=torch.float64)
    batches = [torch.randint(0, SMALL.vocab_size, (3, 20), generator=torch.Generator(
    ).manual_seed(s)) for s in (1, 2)]
    internals = measure_internals(model, batches)
    with torch.no_grad():
        probs = [model(b, return_probs=True).attn_probs for b in batches]
    for layer in range(SMALL.n_layers):
        per_head = sum(first_token_attention_per_head(p[layer]) for p in probs) / len(batches)
        assert internals.f_attn_heads[layer] == pytest.approx(per_head.tolist(), rel=1e-12)
        assert internals.attn_maps is not None
        torch.testing.assert_close(internals.attn_maps[layer],
                                   probs[0][layer][0, :MAP_HEADS].float())
