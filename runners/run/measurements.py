"""The paper's measurements, each defined as the paper defines it (Qiu et al. 2025, arXiv
2505.06708).

- ``f_attn``: the attention probability queries put on the first token of the sequence,
  averaged over heads and queries (query 0, which can only attend to itself, is excluded), per
  layer; then averaged over layers.
- ``m_act``: per layer, the maximum absolute value of that layer's output hidden state; then
  averaged over layers.
- sinks per head (a mean over heads hides a sink that lives in one head), per layer and then
  averaged over layers: ``sink_head_max``, the largest head's first-token share (``f_attn``'s
  definition, per head); ``sink_heads_frac``, the fraction of heads whose share exceeds
  ``SINK_HEAD_THRESHOLD``; ``value_drain``, the first token's value-state norm over the mean
  value-state norm of the others (well below 1 at a sink: attention parked on the first token
  adds little to the output);
  ``resid_peak_first``, the fraction of sequences whose largest residual-stream norm at the
  layer's output is at position 0 (the massive activation of a sink token).
- gate scores: the values a gate multiplies (or adds), over elements, tokens and batches: their
  mean, and the fractions below 0.01 and 0.1, per layer and over all layers; and their
  histogram per layer (``HIST_EDGES``, with counts below 0 and above 1 kept apart).
- attention maps: the probabilities of the first ``MAP_HEADS`` heads of every layer over the
  first ``MAP_TOKENS`` positions of the first measured sequence (``Internals.attn_maps``), for
  pictures of the sink.
- loss spikes: see ``SpikeDetector``. Divergence: see ``diverged``.

Internals are measured on a small fixed measurement batch of validation windows through the
explicit attention path (which returns probabilities), one layer's probabilities at a time;
training keeps the fast backend.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from gatelab.contract import SINK_HEAD_THRESHOLD, InternalsArray
from gatelab.metrics import Metric, layer_metric
from gatelab.model.attention import Attention
from gatelab.model.transformer import GatedLM

Tensor = torch.Tensor


def first_token_attention_per_head(probs_BHTS: Tensor) -> Tensor:
    """Each head's mean probability on key 0 over batch and queries 1..T-1: shape (H,)."""
    return probs_BHTS[:, :, 1:, 0].double().mean((0, 2))


def first_token_attention(probs_BHTS: Tensor) -> float:
    """Mean probability on key 0 over batch, heads and queries 1..T-1 (every head weighs the
    same: the mean of ``first_token_attention_per_head``)."""
    return first_token_attention_per_head(probs_BHTS).mean().item()


def max_abs_activation(hidden_BTD: Tensor) -> float:
    return hidden_BTD.detach().abs().max().item()




def sink_heads_fraction(share_H: Tensor, threshold: float = SINK_HEAD_THRESHOLD) -> float:
    """The fraction of heads whose first-token share (``first_token_attention_per_head``)
    exceeds ``threshold``."""
    return (share_H > threshold).double().mean().item()


def value_drain(v_BTGK: Tensor) -> float:
    """The first token's value-state L2 norm over the mean norm of tokens 1..T-1, per sequence
    and kv head; averaged over both. Needs T >= 2."""
    norms_BTG = v_BTGK.detach().double().norm(dim=-1)
    return (norms_BTG[:, 0] / norms_BTG[:, 1:].mean(1)).mean().item()


def residual_peak_first(hidden_BTD: Tensor) -> float:
    """The fraction of sequences whose largest hidden-state L2 norm is at position 0."""
    norms_BT = hidden_BTD.detach().double().norm(dim=-1)
    return (norms_BT.argmax(dim=1) == 0).double().mean().item()


HIST_BINS = 50
HIST_EDGES = torch.linspace(0.0, 1.0, HIST_BINS + 1, dtype=torch.float64)
"""Gate-score histogram bins over [0, 1]; ``GateScoreStats.hist`` has one count below 0 first
and one above 1 last (SiLU, identity and additive gates are not bounded to [0, 1])."""
MAP_HEADS = 4
MAP_TOKENS = 64


def _zero_hist() -> list[int]:
    return [0] * (HIST_BINS + 2)


@dataclass
class GateScoreStats:
    """Running sums over gate-score tensors (broadcast shapes count once per stored element)."""

    total: float = 0.0
    below_001: float = 0.0
    below_01: float = 0.0
    count: int = 0
    hist: list[int] = field(default_factory=_zero_hist)
    """Counts: [< 0, the ``HIST_BINS`` bins of ``HIST_EDGES`` (the last closed), > 1]."""

    def add(self, scores: Tensor) -> None:
        s = scores.detach().double().flatten().cpu()
        self.total += s.sum().item()
        self.below_001 += (s < 0.01).sum().item()
        self.below_01 += (s < 0.1).sum().item()
        self.count += s.numel()
        inside = s[(s >= 0.0) & (s <= 1.0)]
        bins = torch.clamp((inside * HIST_BINS).long(), max=HIST_BINS - 1)
        counts = torch.bincount(bins, minlength=HIST_BINS).tolist()
        under, over = int((s < 0.0).sum().item()), int((s > 1.0).sum().item())
        self.hist = [a + b for a, b in zip(self.hist, [under, *counts, over], strict=True)]

    def merged(self, other: GateScoreStats) -> GateScoreStats:
        return GateScoreStats(self.total + other.total, self.below_001 + other.below_001,
                              self.below_01 + other.below_01, self.count + other.count,
                              [a + b for a, b in zip(self.hist, other.hist, strict=True)])

    def as_dict(self) -> dict[Metric, float]:
        """The mean score and the fractions below 0.01 and 0.1, by metric."""
        n = max(self.count, 1)
        return {Metric.GATE_SCORE_MEAN: self.total / n,
                Metric.GATE_SCORE_FRAC_BELOW_001: self.below_001 / n,
                Metric.GATE_SCORE_FRAC_BELOW_01: self.below_01 / n}


@dataclass
class Internals:
    """Per-layer measurements; the ``*_mean`` properties average over layers."""

    f_attn: list[float]
    m_act: list[float]
    gate_scores: list[GateScoreStats] = field(default_factory=list)
    attn_maps: Tensor | None = None
    """(layers, heads, n, n) float32: the first ``MAP_HEADS`` heads' probabilities over the first
    ``n = min(MAP_TOKENS, T)`` positions of the first measured sequence (rows: queries)."""
    f_attn_heads: list[list[float]] = field(default_factory=list)
    """Per layer, each head's first-token share (``f_attn`` is their mean); empty: not measured,
    and the per-head metrics are left out."""
    value_drain: list[float] = field(default_factory=list)
    """Per layer, ``value_drain`` averaged over the measured batches."""
    resid_peak_first: list[float] = field(default_factory=list)
    """Per layer, the fraction of measured sequences whose peak residual norm is at token 0."""

    @property
    def f_attn_mean(self) -> float:
        return sum(self.f_attn) / len(self.f_attn)

    @property
    def m_act_mean(self) -> float:
        return sum(self.m_act) / len(self.m_act)

    @property
    def sink_head_max(self) -> list[float]:
        """Per layer, the largest head's first-token share."""
        return [max(heads) for heads in self.f_attn_heads]

    @property
    def sink_heads_frac(self) -> list[float]:
        """Per layer, the fraction of heads above ``SINK_HEAD_THRESHOLD``."""
        return [sink_heads_fraction(torch.tensor(heads, dtype=torch.float64))
                for heads in self.f_attn_heads]

    def per_head_layers(self) -> dict[Metric, list[float]]:
        """The per-head sink metrics, per layer (empty when they were not measured)."""
        if not self.f_attn_heads:
            return {}
        return {Metric.SINK_HEAD_MAX: self.sink_head_max,
                Metric.SINK_HEADS_FRAC: self.sink_heads_frac,
                Metric.VALUE_DRAIN: self.value_drain,
                Metric.RESID_PEAK_FIRST: self.resid_peak_first}

    def gate_overall(self) -> dict[Metric, float] | None:
        if not self.gate_scores:
            return None
        total = GateScoreStats()
        for stats in self.gate_scores:
            total = total.merged(stats)
        return total.as_dict()

    def metrics(self) -> dict[str, float]:
        """The measurements as metrics (``gatelab.metrics``): each mean over layers and its
        per-layer values."""
        out: dict[str, float] = {Metric.F_ATTN: self.f_attn_mean, Metric.M_ACT: self.m_act_mean}
        for i, (f, m) in enumerate(zip(self.f_attn, self.m_act, strict=True)):
            out[layer_metric(Metric.F_ATTN, i)] = f
            out[layer_metric(Metric.M_ACT, i)] = m
        for i, stats in enumerate(self.gate_scores):
            for metric, value in stats.as_dict().items():
                out[layer_metric(metric, i)] = value
        for metric, value in (self.gate_overall() or {}).items():
            out[metric] = value
        for metric, per_layer in self.per_head_layers().items():
            out[metric] = sum(per_layer) / len(per_layer)
            for i, value in enumerate(per_layer):
                out[layer_metric(metric, i)] = value
        return out

    def arrays(self) -> dict[str, Any]:
        """What the metrics cannot hold, as numpy arrays for the ``internals.npz`` artifact, by
        key (``gatelab.contract.InternalsArray``, which describes each)."""
        import numpy as np

        out: dict[str, Any] = {
            InternalsArray.F_ATTN: np.asarray(self.f_attn),
            InternalsArray.M_ACT: np.asarray(self.m_act),
            InternalsArray.F_ATTN_HEADS: (
                np.asarray(self.f_attn_heads, dtype=np.float64) if self.f_attn_heads
                else np.zeros((len(self.f_attn), 0))),
            InternalsArray.HIST_EDGES: HIST_EDGES.numpy(),
            InternalsArray.GATE_HIST: np.asarray([g.hist for g in self.gate_scores],
                                                 dtype=np.int64
                                                 ).reshape(len(self.gate_scores), HIST_BINS + 2),
        }
        if self.attn_maps is not None:
            out[InternalsArray.ATTN_MAPS] = self.attn_maps.numpy()
        return out


@torch.no_grad()
def measure_internals(model: GatedLM, batches: list[Tensor]) -> Internals:
    """f_attn, m_act, the per-head sink metrics and gate scores of ``model`` over the token
    batches ``batches`` (each (B, T), T >= 2); per-batch values are averaged over batches.

    Each layer's probabilities are reduced to what is kept (per-head first-token shares, the
    map's corner) by a hook as the layer returns them, and dropped there: at most one layer's
    (B, H, T, T) exists at a time, so the peak memory does not grow with depth. The LM head
    is not applied (no logits are needed)."""
    n_layers = len(model.blocks)
    heads_sums = [torch.zeros(model.backbone.n_heads, dtype=torch.float64)
                  for _ in range(n_layers)]
    attentions = [m for m in model.modules() if isinstance(m, Attention)]  # one per block
    m_max = [0.0] * n_layers
    drain_sums = [0.0] * n_layers
    peak_first = [0.0] * n_layers  # sequences whose peak residual norm is at token 0
    gate_stats = [GateScoreStats() for _ in model.gates()]
    maps: list[Tensor] = []
    n_sink = model.sink.n  # learned sink positions the probabilities start with: not measured
    hooks = []
    for i, block in enumerate(model.blocks):
        def block_hook(_m: object, _inp: object, out: tuple[Tensor, ...], i: int = i) -> None:
            m_max[i] = max(m_max[i], max_abs_activation(out[0]))
            peak_first[i] += residual_peak_first(out[0]) * out[0].shape[0]

        def value_hook(_m: object, _inp: object, v_BTGK: Tensor, i: int = i) -> None:
            drain_sums[i] += value_drain(v_BTGK)

        def probs_hook(_m: object, _inp: object, out: tuple[Tensor, Tensor | None],
                       i: int = i) -> tuple[Tensor, None]:
            assert out[1] is not None
            probs_BHTS = out[1][:, :, n_sink:, n_sink:]
            heads_sums[i] += first_token_attention_per_head(probs_BHTS).cpu()
            if len(maps) < n_layers:  # the first batch's
                n = min(MAP_TOKENS, probs_BHTS.shape[-1])
                maps.append(probs_BHTS[0, :MAP_HEADS, :n, :n].to("cpu", torch.float32,
                                                                  copy=True))
            return out[0], None
        hooks.append(block.register_forward_hook(block_hook))
        # The value states after any G2 gate (a Passthrough returns wv's output itself).
        hooks.append(attentions[i].gate_v.register_forward_hook(value_hook))
        hooks.append(attentions[i].register_forward_hook(probs_hook))
    for j, gate in enumerate(model.gates()):
        def gate_hook(_m: object, _inp: object, out: Tensor, j: int = j) -> None:
            gate_stats[j].add(out)
        hooks.append(gate.scores_out.register_forward_hook(gate_hook))
    was_training = model.training
    model.eval()
    try:
        for idx_BT in batches:
            model.final_hidden(idx_BT, return_probs=True)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n_batches, n_seqs = len(batches), sum(b.shape[0] for b in batches)
    heads = [(s / n_batches).tolist() for s in heads_sums]
    return Internals([sum(h) / len(h) for h in heads], m_max, gate_stats,
                     torch.stack(maps) if maps else None,
                     f_attn_heads=heads, value_drain=[d / n_batches for d in drain_sums],
                     resid_peak_first=[c / n_seqs for c in peak_first])


class SpikeDetector:
    """A loss spike: a step whose loss exceeds the mean of the previous ``window`` losses by
    more than ``sigma`` of their standard deviations and by at least ``min_nats``.

    The spike score is the sum over spikes of the excess (loss - rolling mean), in nats: it
    weighs a +8 nat spike like eighty +0.1 ones. Spiking losses do enter the window afterwards.
    """

    def __init__(self, window: int, sigma: float, min_nats: float):
        self.window: deque[float] = deque(maxlen=window)
        self.sigma, self.min_nats = sigma, min_nats
        self.count = 0
        self.score = 0.0

    def update(self, loss: float) -> bool:
        """Record one step's loss; True if it is a spike."""
        spike = False
        if len(self.window) == self.window.maxlen and math.isfinite(loss):
            mean = sum(self.window) / len(self.window)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.window) / len(self.window))
            excess = loss - mean
            if excess > max(self.sigma * std, self.min_nats):
                spike = True
                self.count += 1
                self.score += excess
        if math.isfinite(loss):
            self.window.append(loss)
        return spike

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "count": self.count, "score": self.score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.count = int(state["count"])
        self.score = float(state["score"])


def diverged(loss: float, step: int, warmup: int, first_loss: float, margin: float) -> str | None:
    """Why the run has diverged at this step, or ``None``: a NaN/Inf loss at any step, or after
    warmup a loss more than ``margin`` nats above the first step's."""
    if not math.isfinite(loss):
        return f"non-finite loss ({loss}) at step {step}"
    if step >= warmup and loss > first_loss + margin:
        return (f"loss {loss:.3f} at step {step} is more than {margin} nats above the first "
                f"step's {first_loss:.3f}")
    return None
