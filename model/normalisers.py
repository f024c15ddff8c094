"""Attention normalisers: from a query's scores to its weights over the keys.

Each is a module ``(scores_BHTS, future_TS) -> weights_BHTS`` (``future_TS``: True where the key
comes after the query) used by the explicit attention path (``attention_ops.explicit``), so every
one of them returns its weights, and ``f_attn`` (the weight on key 0) is defined for all. Softmax
also runs on the fused kernels; the others only here. How the weights of each read:

- ``softmax``: a distribution over the visible keys (rows sum to 1).
- ``sink-logit``, ``softmax-plus-one``: a softmax over the visible keys and one virtual key of
  logit ``b_h`` (learned per head, or 0) and value 0; the weights over the real keys sum to
  less than 1, the rest went to the virtual key ("attention nowhere").
- ``clipped-softmax``: the softmax stretched and clipped to [0, 1]; rows sum to about 1, small
  weights become exactly 0.
- ``sigmoid``, ``relu``: each key weighed on its own; a row's sum is anything >= 0, so
  ``f_attn`` is the weight on the first token, not a share of a whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gatelab.registry.schema import Normaliser, NormaliserSpec

Tensor = torch.Tensor


class Softmax(nn.Module):
    """The paper's causal softmax (the fused kernels compute it too)."""

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        return scores_BHTS.masked_fill(future_TS, float("-inf")).softmax(-1)


def virtual_key_softmax(scores_BHTS: Tensor, future_TS: Tensor, logit_H: Tensor) -> Tensor:
    """Softmax over the visible keys and one virtual key of logit ``logit_H[h]`` and value 0,
    whose weight is dropped: ``exp(s_j) / (exp(b_h) + sum_j exp(s_j))``."""
    B, H, T, _ = scores_BHTS.shape
    virtual = logit_H.to(scores_BHTS.dtype)[None, :, None, None].expand(B, H, T, 1)
    masked = scores_BHTS.masked_fill(future_TS, float("-inf"))
    return torch.cat([masked, virtual], dim=-1).softmax(-1)[..., :-1]


class SinkLogit(nn.Module):
    """A learned logit ``b_h`` per head in the softmax's denominator (gpt-oss-style attention
    sinks), zero at init: at init this is ``softmax-plus-one``."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.sink_logit_H = nn.Parameter(torch.zeros(n_heads))

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        return virtual_key_softmax(scores_BHTS, future_TS, self.sink_logit_H)


class SoftmaxPlusOne(nn.Module):
    """``exp(s_j) / (1 + sum_j exp(s_j))``: a sink logit fixed at 0 ("attention is off by one",
    Miller 2023)."""

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        zero_H = scores_BHTS.new_zeros(scores_BHTS.shape[1])
        return virtual_key_softmax(scores_BHTS, future_TS, zero_H)


class ClippedSoftmax(nn.Module):
    """``clip((zeta - gamma) * softmax + gamma, 0, 1)`` (Bondarenko et al. 2023): with gamma < 0
    a head can put exactly zero weight on a key, and so on every key."""

    def __init__(self, gamma: float, zeta: float):
        super().__init__()
        self.gamma, self.zeta = gamma, zeta

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        probs = scores_BHTS.masked_fill(future_TS, float("-inf")).softmax(-1)
        return ((self.zeta - self.gamma) * probs + self.gamma).clamp(0.0, 1.0)


class SigmoidAttention(nn.Module):
    """``sigmoid(s_j - log n)`` on each visible key, n the number of keys of the sequence
    (Ramapuram et al. 2024's bias b = -log n)."""

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        n = scores_BHTS.shape[-1]
        return torch.sigmoid(scores_BHTS - math.log(n)).masked_fill(future_TS, 0.0)


class ReluAttention(nn.Module):
    """``relu(s_j) / n`` on each visible key, n the number of keys of the sequence (the ReLU
    attention Guo et al. 2024 train to remove sinks)."""

    def forward(self, scores_BHTS: Tensor, future_TS: Tensor) -> Tensor:
        n = scores_BHTS.shape[-1]
        return (torch.relu(scores_BHTS) / n).masked_fill(future_TS, 0.0)


NORMALISERS: dict[Normaliser, Callable[[NormaliserSpec, int], nn.Module]] = {
    Normaliser.SOFTMAX: lambda spec, heads: Softmax(),
    Normaliser.SINK_LOGIT: lambda spec, heads: SinkLogit(heads),
    Normaliser.SOFTMAX_PLUS_ONE: lambda spec, heads: SoftmaxPlusOne(),
    Normaliser.CLIPPED_SOFTMAX: lambda spec, heads: ClippedSoftmax(
        float(spec.gamma if spec.gamma is not None else 0.0),
        float(spec.zeta if spec.zeta is not None else 1.0)),
    Normaliser.SIGMOID: lambda spec, heads: SigmoidAttention(),
    Normaliser.RELU: lambda spec, heads: ReluAttention(),
}
"""The normaliser module a spec names, for ``n_heads`` query heads."""


def build_normaliser(spec: NormaliserSpec, n_heads: int) -> nn.Module:
    return NORMALISERS[spec.kind](spec, n_heads)
