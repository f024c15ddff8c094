"""Feed-forward layers: a SwiGLU, and a top-k routed mixture of SwiGLU experts.

Both return ``(y, aux_loss)`` so a block treats them alike; the dense FFN's aux loss is 0.

The experts of a routed layer are computed by one of three functions of the same contract
(``EXPERT_PATHS``), chosen per call from where the tensors live, because that is only known
when the layer runs (autocast, device, ``torch.compile``):
- ``grouped``: the routed slots sorted by expert and one ``grouped_mm`` per weight matrix (CUDA,
  bf16): static shapes, no host sync, no graph break;
- ``looped``: the same sorted slots, one matrix product per expert over its contiguous rows: one
  host sync per layer (the expert sizes); the eager path elsewhere, and the one whose numbers
  runs recorded before it reproduce;
- ``dense``: every expert on every token, weighted by its routing weight (0 where unrouted):
  static shapes and no sync for ``torch.compile`` where ``grouped`` cannot run, at E/k times the
  expert FLOPs.
All three equal the one-token-at-a-time reference of ``tests/model/naive_reference.py``.
"""

from __future__ import annotations

from collections.abc import Callable

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


class Routing:
    """The routed slots (token, expert, weight) of one call, sorted by expert (stable, so
    each expert's tokens keep their order): ``S = N * top_k`` slots; and the dtype the
    matrix products run in (the router's output dtype: autocast's, else the weights')."""

    def __init__(self, experts_NK: Tensor, weights_NK: Tensor, n_experts: int,
                 compute_dtype: torch.dtype):
        self.compute_dtype = compute_dtype
        top_k = experts_NK.shape[1]
        experts_S = experts_NK.flatten()
        self.order_S = experts_S.argsort(stable=True)
        self.token_S = self.order_S // top_k
        self.expert_S = experts_S[self.order_S]
        self.weight_S = weights_NK.flatten()[self.order_S]
        self.counts_E = torch.zeros(n_experts, dtype=torch.int64, device=experts_S.device
                                    ).scatter_add_(0, experts_S, torch.ones_like(experts_S))
        """Slots per expert (a scatter, not ``bincount``: its size is static, no host sync)."""


ExpertWeights = tuple[Tensor, Tensor, Tensor]
"""(w_gate (E, H, D), w_up (E, H, D), w_down (E, D, H))."""


def experts_looped(x_ND: Tensor, w: ExpertWeights, r: Routing) -> Tensor:
    """Each expert's SwiGLU on its contiguous rows of the sorted slots (one host sync: the
    expert sizes), combined in expert order."""
    w_gate, w_up, w_down = w
    x_SD = x_ND[r.token_S]
    parts = []
    for e, rows in enumerate(x_SD.split(r.counts_E.tolist())):
        if rows.shape[0]:
            parts.append((F.silu(rows @ w_gate[e].T) * (rows @ w_up[e].T)) @ w_down[e].T)
    y_SD = torch.cat(parts) * r.weight_S[:, None]
    return torch.zeros_like(x_ND).index_add_(0, r.token_S, y_SD.to(x_ND.dtype))


def experts_grouped(x_ND: Tensor, w: ExpertWeights, r: Routing) -> Tensor:
    """The sorted slots through ``grouped_mm`` (one kernel per weight matrix), in the compute
    dtype (bf16 under autocast, as autocast would run these products)."""
    dtype = r.compute_dtype
    w_gate, w_up, w_down = (m.to(dtype) for m in w)
    offs = r.counts_E.cumsum(0).to(torch.int32)
    x_SD = x_ND[r.token_S].to(dtype)
    h_SH = (F.silu(F.grouped_mm(x_SD, w_gate.transpose(-2, -1), offs=offs))
            * F.grouped_mm(x_SD, w_up.transpose(-2, -1), offs=offs))
    y_SD = F.grouped_mm(h_SH, w_down.transpose(-2, -1), offs=offs) * r.weight_S[:, None]
    return torch.zeros_like(x_ND).index_add_(0, r.token_S, y_SD.to(x_ND.dtype))


def experts_dense(x_ND: Tensor, w: ExpertWeights, r: Routing) -> Tensor:
    """Every expert on every token, weighted by the token's routing weight (0 if unrouted)."""
    w_gate, w_up, w_down = w
    E = w_gate.shape[0]
    weight_NE = torch.zeros(x_ND.shape[0], E, dtype=r.weight_S.dtype, device=x_ND.device
                            ).index_put((r.token_S, r.expert_S), r.weight_S)
    h_ENH = F.silu(torch.einsum("nd,ehd->enh", x_ND, w_gate)) * torch.einsum(
        "nd,ehd->enh", x_ND, w_up)
    y_END = torch.einsum("enh,edh->end", h_ENH, w_down)
    return torch.einsum("end,ne->nd", y_END, weight_NE.to(y_END.dtype)).to(x_ND.dtype)


EXPERT_PATHS: dict[str, Callable[[Tensor, ExpertWeights, Routing], Tensor]] = {
    "looped": experts_looped, "grouped": experts_grouped, "dense": experts_dense,
}


def expert_path(x_ND: Tensor, compute_dtype: torch.dtype, widths: tuple[int, ...]) -> str:
    """The expert path for a call: ``grouped`` on CUDA where the matrix products run in bf16
    (autocast) and every width is a multiple of 8 (grouped GEMM's 16-byte alignment);
    else ``dense`` while ``torch.compile`` traces, ``looped`` when eager."""
    if (x_ND.is_cuda and compute_dtype == torch.bfloat16
            and all(width % 8 == 0 for width in widths)):
        return "grouped"
    return "dense" if torch.compiler.is_compiling() else "looped"


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
        self.path: str | None = None
        """``None``: chosen per call (``expert_path``); a key of ``EXPERT_PATHS``: forced
        (tests compare the paths)."""

    def forward(self, x_BTD: Tensor) -> tuple[Tensor, Tensor]:
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
        logits_NE = self.router(x_ND)  # autocast's dtype: the experts' compute dtype
        probs_NE = logits_NE.to(torch.promote_types(logits_NE.dtype, torch.float32)).softmax(-1)
        weights_NK, experts_NK = probs_NE.topk(self.top_k, dim=-1)
        weights_NK = (weights_NK / weights_NK.sum(-1, keepdim=True)).to(x_ND.dtype)
        routing = Routing(experts_NK, weights_NK, self.n_experts, logits_NE.dtype)
        weights = (self.w_gate_EHD, self.w_up_EHD, self.w_down_EDH)
        path = self.path or expert_path(x_ND, logits_NE.dtype, self.w_gate_EHD.shape[1:])
        y_ND = EXPERT_PATHS[path](x_ND, weights, routing)
        chosen_fraction_E = routing.counts_E.to(probs_NE.dtype) / experts_NK.numel()
        aux = self.coef * self.n_experts * (chosen_fraction_E * probs_NE.mean(0)).sum()
        return y_ND.view_as(x_BTD), aux
