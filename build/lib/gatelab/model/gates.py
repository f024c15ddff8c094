"""The gate and the paper's non-gate controls, as modules with one signature: ``(x, y) -> y'``.

``x_BTD`` is the attention block's normed input (the tensor that feeds q, k, v); ``y_BTHK`` is
the tensor at the insertion point, viewed as heads ``H`` of width ``K`` (at G5: ``H = 1``,
``K = d_model``). Every choice a ``GateSpec`` makes is looked up once, in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.model.init import linear
from gatelab.model.norms import RMSNorm
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import (
    Activation,
    Combine,
    GateInit,
    GateInput,
    GateSpec,
    Granularity,
    Position,
    SdpaControl,
    Sharing,
    WeightInit,
)

Tensor = torch.Tensor

ACTIVATIONS: dict[Activation, Callable[[Tensor], Tensor]] = {
    Activation.SIGMOID: torch.sigmoid,
    Activation.SILU: F.silu,
    Activation.NS_SIGMOID: lambda z: 0.5 + 0.5 * torch.sigmoid(z),
    Activation.IDENTITY: lambda z: z,
}

COMBINES: dict[Combine, Callable[[Tensor, Tensor], Tensor]] = {
    Combine.MULTIPLICATIVE: torch.mul,
    Combine.ADDITIVE: torch.add,
}

SHARINGS: dict[Sharing, Callable[[Tensor], Tensor]] = {
    Sharing.HEAD_SPECIFIC: lambda s_BTHW: s_BTHW,
    # Scores (after the activation) averaged over heads: every head gets the same vector.
    Sharing.HEAD_SHARED: lambda s_BTHW: s_BTHW.mean(dim=-2, keepdim=True),
}


class InputLogits(nn.Module):
    """Gate logits X W (+ b) of each token: shape (B, T, H, W)."""

    def __init__(self, d_model: int, n_heads: int, width: int, init: GateInit):
        super().__init__()
        self.shape = (n_heads, width)
        self.proj = linear(d_model, n_heads * width, std=init.std, bias=init.bias is not None)
        if init.weight is WeightInit.ZERO:
            nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.constant_(self.proj.bias, float(init.bias or 0.0))

    def forward(self, x_BTD: Tensor) -> Tensor:
        return self.proj(x_BTD).unflatten(-1, self.shape)


class LearnedLogits(nn.Module):
    """Input-independent gate logits: one learned (H, W) parameter, zeros by default."""

    def __init__(self, d_model: int, n_heads: int, width: int, init: GateInit):
        super().__init__()
        self.logits_HW = nn.Parameter(torch.zeros(n_heads, width))
        if init.weight is WeightInit.NORMAL:
            nn.init.normal_(self.logits_HW, std=init.std)

    def forward(self, x_BTD: Tensor) -> Tensor:
        return self.logits_HW.to(x_BTD.dtype)[None, None]


LOGIT_SOURCES: dict[GateInput, type[InputLogits] | type[LearnedLogits]] = {
    GateInput.DEPENDENT: InputLogits,
    GateInput.INDEPENDENT: LearnedLogits,
}


class Gate(nn.Module):
    """``y' = combine(y, share(act(logits(x))))``; see ``registry.schema.GateSpec``."""

    def __init__(self, spec: GateSpec, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        width = head_dim if spec.granularity is Granularity.ELEMENTWISE else 1
        self.logits = LOGIT_SOURCES[spec.input](d_model, n_heads, width, spec.init)
        self.activation = ACTIVATIONS[spec.activation]
        self.share = SHARINGS[spec.sharing]
        self.combine = COMBINES[spec.combine]
        self.scores_out = nn.Identity()
        """A hook point: its output is the score tensor the gate applies, (B|1, T|1, H|1, W)."""

    def forward(self, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
        scores = self.scores_out(self.share(self.activation(self.logits(x_BTD))))
        return self.combine(y_BTHK, scores)


class GroupRMSNorm(nn.Module):
    """Table 3's "SDPA GroupNorm": RMSNorm over each head's output, a weight per channel."""

    def __init__(self, head_dim: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(head_dim, eps)

    def forward(self, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
        return self.norm(y_BTHK)


class SdpaSiLU(nn.Module):
    """Table 3's parameter-free SiLU of the SDPA output."""

    def forward(self, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
        return F.silu(y_BTHK)


SCALE_CONTROL = 0.5
"""The constant of the ``scale`` control: sigmoid(0), the value every score of the default
gate (normal(0, 0.02) weights, no bias) starts near."""


class SdpaScale(nn.Module):
    """A scale control: the SDPA output times a fixed constant, no parameters and no input. A
    gain of the gate that this control also shows comes from rescaling the attention path at
    initialisation, not from the gate."""

    def forward(self, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
        return y_BTHK * SCALE_CONTROL


class Passthrough(nn.Module):
    """No gate at this insertion point: returns ``y`` itself."""

    def forward(self, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
        return y_BTHK


def heads_at(position: Position, backbone: Backbone) -> tuple[int, int]:
    """(heads, width per head) of the tensor at an insertion point."""
    table = {
        Position.G1: (backbone.n_heads, backbone.head_dim),
        Position.G2: (backbone.n_kv_heads, backbone.head_dim),
        Position.G3: (backbone.n_kv_heads, backbone.head_dim),
        Position.G4: (backbone.n_heads, backbone.head_dim),
        Position.G5: (1, backbone.d_model),
    }
    return table[position]


CONTROLS: dict[SdpaControl, Callable[[Backbone], nn.Module]] = {
    SdpaControl.GROUP_RMSNORM: lambda bb: GroupRMSNorm(bb.head_dim, bb.norm_eps),
    SdpaControl.SILU: lambda bb: SdpaSiLU(),
    SdpaControl.SCALE: lambda bb: SdpaScale(),
}


def insertion_points(
    gate: GateSpec | None, control: SdpaControl | None, backbone: Backbone
) -> dict[Position, nn.Module]:
    """The module to apply at each of G1..G5: the gate or control where the spec puts one,
    ``Passthrough`` elsewhere."""
    points: dict[Position, nn.Module] = {p: Passthrough() for p in Position}
    if gate is not None:
        n_heads, head_dim = heads_at(gate.position, backbone)
        points[gate.position] = Gate(gate, backbone.d_model, n_heads, head_dim)
    if control is not None:
        points[Position.G1] = CONTROLS[control](backbone)
    return points
