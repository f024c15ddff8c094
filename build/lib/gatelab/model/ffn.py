"""Feed-forward layers: a SwiGLU, and a top-k routed mixture of SwiGLU experts.

Both return ``(y, aux_loss)`` so a block treats them alike; the dense FFN's aux loss is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.model.init import DEFAULT_STD, linear
from gatelab.registry.backbone import MoEConfig

Tensor = torch.Tensor


class SwiGLU(nn.Module):
    """w_down(SiLU(w_gate x) * w_up x)."""

    def __init__(self, d_model: int, hidden: int, out_std: float):
        super().__init__()
        self.w_gate = linear(d_model, hidden)
        self.w_up = linear(d_model, hidden)
        self.w_down = linear(hidden, d_model, std=out_std)

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Tensor]:
        y = self.w_down(F.silu(self.w_gate(x_BTD)) * self.w_up(x_BTD))
        return y, x_BTD.new_zeros(())


class MoE(nn.Module):
    """Softmax router, top-k experts with renormalised weights (Qwen3-MoE), and the
    Switch-Transformer load-balancing loss ``E * sum_e f_e * p_e`` (f_e: fraction of routed
    slots that chose expert e; p_e: mean router probability of e), scaled by ``aux_loss_coef``."""

    def __init__(self, d_model: int, moe: MoEConfig, out_std: float):
        super().__init__()
        self.top_k, self.n_experts, self.coef = moe.top_k, moe.n_experts, moe.aux_loss_coef
        E, Hd = moe.n_experts, moe.expert_hidden
        self.router = linear(d_model, E)
        self.w_gate_EHD = nn.Parameter(torch.randn(E, Hd, d_model) * DEFAULT_STD)
        self.w_up_EHD = nn.Parameter(torch.randn(E, Hd, d_model) * DEFAULT_STD)
        self.w_down_EDH = nn.Parameter(torch.randn(E, d_model, Hd) * out_std)

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Tensor]:
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
        logits_NE = self.router(x_ND)
        probs_NE = logits_NE.to(torch.promote_types(logits_NE.dtype, torch.float32)).softmax(-1)
        weights_NK, experts_NK = probs_NE.topk(self.top_k, dim=-1)
        weights_NK = (weights_NK / weights_NK.sum(-1, keepdim=True)).to(x_ND.dtype)
        y_ND = torch.zeros_like(x_ND)
        for e in range(self.n_experts):
            token_idx, slot = (experts_NK == e).nonzero(as_tuple=True)
            if token_idx.numel() == 0:
                continue
            xe = x_ND[token_idx]
            he = F.silu(xe @ self.w_gate_EHD[e].T) * (xe @ self.w_up_EHD[e].T)
            ye = (he @ self.w_down_EDH[e].T) * weights_NK[token_idx, slot, None]
            y_ND.index_add_(0, token_idx, ye)
        chosen_fraction_E = F.one_hot(experts_NK, self.n_experts).to(probs_NE.dtype).mean((0, 1))
        aux = self.coef * self.n_experts * (chosen_fraction_E * probs_NE.mean(0)).sum()
        return y_ND.view_as(x_BTD), aux
