"""The paper's measurements, each defined as the paper defines it (``shared/docs/paper.md``).

- ``f_attn``: the attention probability queries put on the first token of the sequence,
  averaged over heads and queries (query 0, which can only attend to itself, is excluded), per
  layer; then averaged over layers.
- ``m_act``: per layer, the maximum absolute value of that layer's output hidden state; then
  averaged over layers.
- gate scores: the values a gate multiplies (or adds), over elements, tokens and batches: their
  mean, and the fractions below 0.01 and 0.1, per layer and over all layers.
- loss spikes: see ``SpikeDetector``. Divergence: see ``diverged``.

Internals are measured on fixed validation batches through the explicit attention path (which
returns probabilities); training keeps the fast backend.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from model.transformer import GatedLM

Tensor = torch.Tensor


def first_token_attention(probs_BHTS: Tensor) -> float:
    """Mean probability on key 0 over batch, heads and queries 1..T-1."""
    return probs_BHTS[:, :, 1:, 0].double().mean().item()


def max_abs_activation(hidden_BTD: Tensor) -> float:
    return hidden_BTD.detach().abs().max().item()


@dataclass
class GateScoreStats:
    """Running sums over gate-score tensors (broadcast shapes count once per stored element)."""

    total: float = 0.0
    below_001: float = 0.0
    below_01: float = 0.0
    count: int = 0

    def add(self, scores: Tensor) -> None:
        s = scores.detach().double()
        self.total += s.sum().item()
        self.below_001 += (s < 0.01).sum().item()
        self.below_01 += (s < 0.1).sum().item()
        self.count += s.numel()

    def merged(self, other: GateScoreStats) -> GateScoreStats:
        return GateScoreStats(self.total + other.total, self.below_001 + other.below_001,
                              self.below_01 + other.below_01, self.count + other.count)

    def as_dict(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"mean": self.total / n, "frac_below_0.01": self.below_001 / n,
                "frac_below_0.1": self.below_01 / n}


@dataclass
class Internals:
    """Per-layer measurements; the ``*_mean`` properties average over layers."""

    f_attn: list[float]
    m_act: list[float]
    gate_scores: list[GateScoreStats] = field(default_factory=list)

    @property
    def f_attn_mean(self) -> float:
        return sum(self.f_attn) / len(self.f_attn)

    @property
    def m_act_mean(self) -> float:
        return sum(self.m_act) / len(self.m_act)

    def gate_overall(self) -> dict[str, float] | None:
        if not self.gate_scores:
            return None
        total = GateScoreStats()
        for stats in self.gate_scores:
            total = total.merged(stats)
        return total.as_dict()

    def metrics(self) -> dict[str, float]:
        """Flat metric names for the tracking store."""
        out: dict[str, float] = {"f_attn": self.f_attn_mean, "m_act": self.m_act_mean}
        for i, (f, m) in enumerate(zip(self.f_attn, self.m_act, strict=True)):
            out[f"f_attn.layer{i:02d}"] = f
            out[f"m_act.layer{i:02d}"] = m
        for i, stats in enumerate(self.gate_scores):
            for key, value in stats.as_dict().items():
                out[f"gate_score.{key}.layer{i:02d}"] = value
        for key, value in (self.gate_overall() or {}).items():
            out[f"gate_score.{key}"] = value
        return out


@torch.no_grad()
def measure_internals(model: GatedLM, batches: list[Tensor]) -> Internals:
    """f_attn, m_act and gate scores of ``model`` over the token batches ``batches``."""
    n_layers = len(model.blocks)
    f_sums = [0.0] * n_layers
    m_max = [0.0] * n_layers
    gate_stats = [GateScoreStats() for _ in model.gates()]
    hooks = []
    for i, block in enumerate(model.blocks):
        def block_hook(_m: object, _inp: object, out: tuple[Tensor, ...], i: int = i) -> None:
            m_max[i] = max(m_max[i], max_abs_activation(out[0]))
        hooks.append(block.register_forward_hook(block_hook))
    for j, gate in enumerate(model.gates()):
        def gate_hook(_m: object, _inp: object, out: Tensor, j: int = j) -> None:
            gate_stats[j].add(out)
        hooks.append(gate.scores_out.register_forward_hook(gate_hook))
    was_training = model.training
    model.eval()
    try:
        for idx_BT in batches:
            probs = model(idx_BT, return_probs=True).attn_probs
            assert probs is not None
            for i, p in enumerate(probs):
                f_sums[i] += first_token_attention(p)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return Internals([f / len(batches) for f in f_sums], m_max, gate_stats)


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
