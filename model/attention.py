"""Grouped-query attention with a gate (or control) at the spec's insertion point, the spec's
normaliser (softmax by default) and, where the spec has SwitchHead, expert k/v projections."""

from __future__ import annotations

import torch
from torch import nn

from gatelab.model import attention_ops
from gatelab.model.gates import Gate, insertion_points
from gatelab.model.init import linear
from gatelab.model.normalisers import build_normaliser
from gatelab.model.norms import RMSNorm
from gatelab.model.rope import apply_rope
from gatelab.model.switch_head import Router, kv_projections
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import Architecture, Position

Tensor = torch.Tensor


class Attention(nn.Module):
    """Q/K/V projections, QK-norm, RoPE, causal attention, output projection; and G1..G5.

    Built from the resolved backbone and the architecture's attention fields (``gate``,
    ``sdpa_control``, ``normaliser``, ``switch_head``). Every insertion point holds a module
    ``(x, y) -> y'``: a ``Gate``, a control, or ``Passthrough``; ``wk`` and ``wv`` are linear
    layers or SwitchHead experts; ``normalise`` turns scores into weights, and ``kernel`` is the
    fused kernel for softmax or the explicit path with ``normalise``. ``forward`` therefore has
    no branch on the variant.
    """

    def __init__(self, backbone: Backbone, arch: Architecture,
                 kernel: attention_ops.Kernel = attention_ops.Kernel.SDPA):
        super().__init__()
        bb = backbone
        self.n_heads, self.n_kv_heads, self.head_dim = bb.n_heads, bb.n_kv_heads, bb.head_dim
        out_std = 0.02 / (2 * bb.n_layers) ** 0.5
        self.wq = linear(bb.d_model, bb.n_heads * bb.head_dim)
        self.wk, self.wv = kv_projections(bb, arch.switch_head)
        self.wo = linear(bb.n_heads * bb.head_dim, bb.d_model, std=out_std)
        self.q_norm = RMSNorm(bb.head_dim, bb.norm_eps) if bb.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(bb.head_dim, bb.norm_eps) if bb.qk_norm else nn.Identity()
        points = insertion_points(arch.gate, arch.sdpa_control, bb)
        self.gate_sdpa = points[Position.G1]
        self.gate_v = points[Position.G2]
        self.gate_k = points[Position.G3]
        self.gate_q = points[Position.G4]
        self.gate_out = points[Position.G5]
        self.normalise = build_normaliser(arch.normaliser, bb.n_heads)
        self.kernel = attention_ops.kernel_for(
            attention_ops.kernel_used(kernel, arch.normaliser), self.normalise)

    def gates(self) -> list[Gate | Router]:
        """The modules of this layer that apply gate scores, each with a ``scores_out`` hook:
        the gate, SwitchHead's router (zero, one or both)."""
        return [m for m in self.modules() if isinstance(m, Gate | Router)]

    def forward(
        self, x_BTD: Tensor, cos_TK: Tensor, sin_TK: Tensor, return_probs: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Output (B, T, D) and, with ``return_probs``, probabilities (B, H, T, T)."""
        B, T, D = x_BTD.shape
        q_BTHK = self.gate_q(x_BTD, self.wq(x_BTD).view(B, T, self.n_heads, self.head_dim))
        k_BTGK = self.gate_k(x_BTD, self.wk(x_BTD).view(B, T, self.n_kv_heads, self.head_dim))
        v_BTGK = self.gate_v(x_BTD, self.wv(x_BTD).view(B, T, self.n_kv_heads, self.head_dim))
        q_BTHK = apply_rope(self.q_norm(q_BTHK), cos_TK, sin_TK)
        k_BTGK = apply_rope(self.k_norm(k_BTGK), cos_TK, sin_TK)
        probs = None
        if return_probs:
            o_BTHK, probs = attention_ops.explicit(q_BTHK, k_BTGK, v_BTGK, self.normalise)
        else:
            o_BTHK = self.kernel(q_BTHK, k_BTGK, v_BTGK)
        o_BTHK = self.gate_sdpa(x_BTD, o_BTHK)
        y_BTD = self.wo(o_BTHK.reshape(B, T, self.n_heads * self.head_dim))
        y_BTD = self.gate_out(x_BTD, y_BTD.view(B, T, 1, D)).view(B, T, D)
        return y_BTD, probs
