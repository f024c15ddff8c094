"""SwitchHead's attention experts (Csordás et al. 2024; the paper's Table 6): a value (and
optionally key) projection whose every kv head is the score-weighted sum of its top-k of n expert
projections, scored by a sigmoid router per kv head from the token's normed block input.

``kv_projections`` gives the key and value projections of one attention layer: plain bias-free
linear layers, or ``ExpertProjection``s where the spec's ``switch_head`` covers them (k and v
share one ``Router``, as both are read at the key's position). Both map (B, T, D) to
(B, T, G * K), so ``Attention.forward`` does not know which it holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gatelab.model.init import DEFAULT_STD, linear
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import ExpertProjections, SwitchHeadSpec

Tensor = torch.Tensor

SWITCHED: dict[ExpertProjections, tuple[str, ...]] = {
    ExpertProjections.V: ("v",),
    ExpertProjections.KV: ("k", "v"),
}
"""The projections (``"k"``, ``"v"``) each choice replaces by experts."""


def _unobserved(scores: Tensor) -> Tensor:
    return scores


class Router(nn.Module):
    """Expert weights (B, T, G, E): ``sigmoid(x R)`` on each kv head's ``top_k`` best-scored
    experts, 0 on the others (a fixed-shape computation: no data-dependent indexing).
    ``scores_out`` is a hook point whose output is the chosen experts' scores (B, T, G, top_k),
    the router's gate scores: with one expert, exactly the G2 headwise gate's."""

    def __init__(self, d_model: int, n_heads: int, spec: SwitchHeadSpec):
        super().__init__()
        self.shape, self.top_k = (n_heads, spec.n_experts), spec.top_k
        self.proj = linear(d_model, n_heads * spec.n_experts)
        self.scores_out = nn.Identity()

    def forward(self, x_BTD: Tensor) -> Tensor:
        return self.weights(x_BTD, self.scores_out)

    def weights(self, x_BTD: Tensor, observe: Callable[[Tensor], Tensor] = _unobserved
                ) -> Tensor:
        """The expert weights; ``observe`` sees the chosen scores (``forward``: the hook)."""
        scores_BTGE = torch.sigmoid(self.proj(x_BTD).unflatten(-1, self.shape))
        top_BTGk, chosen_BTGk = scores_BTGE.topk(self.top_k, dim=-1)
        return torch.zeros_like(scores_BTGE).scatter(-1, chosen_BTGk, observe(top_BTGk))


class ExpertProjection(nn.Module):
    """``y_g = sum_e w_ge(x) * (x W_ge)``, ``w`` the router's weights (0 off the top-k). Every
    expert is computed, so the shape never depends on the routing."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, n_experts: int,
                 router: Router, observed: bool):
        super().__init__()
        self.n_heads = n_heads
        self.router = router
        self.route: Callable[[Tensor], Tensor] = router.forward if observed else router.weights
        """Only one of the projections sharing a router fires its hook (scores count once)."""
        self.experts_EOD = nn.Parameter(torch.empty(n_experts, n_heads * head_dim, d_model))
        nn.init.normal_(self.experts_EOD, std=DEFAULT_STD)

    def forward(self, x_BTD: Tensor) -> Tensor:
        weights_BTGE = self.route(x_BTD)
        experts_BTEO = torch.einsum("btd,eod->bteo", x_BTD, self.experts_EOD)
        experts_BTEGK = experts_BTEO.unflatten(-1, (self.n_heads, -1))
        return torch.einsum("btge,btegk->btgk", weights_BTGE, experts_BTEGK).flatten(-2)


def kv_projections(bb: Backbone, switch: SwitchHeadSpec | None) -> tuple[nn.Module, nn.Module]:
    """The key and value projections: linear layers, or experts (sharing one router, whose
    hook the value projection fires) where ``switch`` covers them."""
    if switch is None:
        return (linear(bb.d_model, bb.n_kv_heads * bb.head_dim),
                linear(bb.d_model, bb.n_kv_heads * bb.head_dim))
    router = Router(bb.d_model, bb.n_kv_heads, switch)
    switched = SWITCHED[switch.projections]
    k, v = (ExpertProjection(bb.d_model, bb.n_kv_heads, bb.head_dim, switch.n_experts, router,
                             observed=name == "v")
            if name in switched else linear(bb.d_model, bb.n_kv_heads * bb.head_dim)
            for name in ("k", "v"))
    return k, v
