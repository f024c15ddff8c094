"""The decoder-only LM: embeddings, blocks of (attention, FFN), final norm, LM head.

``GatedLM(backbone, architecture)`` builds exactly what a resolved backbone and the
architecture part of a spec say; ``gatelab.model.build`` resolves the backbone from a size.
A spec's sink tokens are learned embeddings put before every sequence's own; they pass through
every layer (taking the first RoPE positions) and are dropped from the logits and from the
attention weights returned, which are the sequence's own tokens' (so ``f_attn`` reads the
sequence's real first token; what the sink tokens drew is the weights' shortfall from 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gatelab.model.attention import Attention
from gatelab.model.attention_ops import Kernel
from gatelab.model.ffn import MoE, SwiGLU
from gatelab.model.gates import Gate
from gatelab.model.init import DEFAULT_STD
from gatelab.model.norms import RMSNorm
from gatelab.model.rope import rope_tables
from gatelab.model.switch_head import Router
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import Architecture, NormPlacement

Tensor = torch.Tensor

OUTPUT_NORMS: dict[NormPlacement, Callable[[int, float], nn.Module]] = {
    NormPlacement.PRE: lambda dim, eps: nn.Identity(),
    NormPlacement.SANDWICH: lambda dim, eps: RMSNorm(dim, eps),
}


class Block(nn.Module):
    """``h = x + out_norm(attn(norm(x)))``, then the same for the FFN; ``out_norm`` is the
    identity for pre-norm and an RMSNorm for sandwich norm."""

    def __init__(self, backbone: Backbone, arch: Architecture, kernel: Kernel):
        super().__init__()
        bb = backbone
        out_std = DEFAULT_STD / (2 * bb.n_layers) ** 0.5
        self.attn_norm = RMSNorm(bb.d_model, bb.norm_eps)
        self.attn = Attention(bb, arch, kernel)
        self.attn_out_norm = OUTPUT_NORMS[arch.norm](bb.d_model, bb.norm_eps)
        self.ffn_norm = RMSNorm(bb.d_model, bb.norm_eps)
        self.ffn: SwiGLU | MoE = (
            MoE(bb.d_model, bb.moe, out_std)
            if bb.moe is not None
            else SwiGLU(bb.d_model, bb.ffn_hidden, out_std)
        )
        self.ffn_out_norm = OUTPUT_NORMS[arch.norm](bb.d_model, bb.norm_eps)

    def forward(
        self, x_BTD: Tensor, cos_TK: Tensor, sin_TK: Tensor, return_probs: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """New hidden state, the FFN's aux loss, and the attention probabilities if asked."""
        a_BTD, probs = self.attn(self.attn_norm(x_BTD), cos_TK, sin_TK, return_probs)
        h_BTD = x_BTD + self.attn_out_norm(a_BTD)
        f_BTD, aux = self.ffn(self.ffn_norm(h_BTD))
        return h_BTD + self.ffn_out_norm(f_BTD), aux, probs


@dataclass
class LMOutput:
    logits: Tensor
    """(B, T, vocab)."""
    aux_loss: Tensor
    """Sum over layers of the MoE load-balancing loss (0 for a dense FFN), already weighted."""
    attn_probs: list[Tensor] | None = None
    """Per layer, (B, H, T, T); only with ``return_probs``. The weights among the sequence's
    own tokens (sink tokens' rows and columns left out)."""


class SinkTokens(nn.Module):
    """``n`` learned embeddings put before every sequence, normal(0, 0.02) as the token
    embeddings are (StreamingLLM's pre-training sink token: one)."""

    def __init__(self, n: int, d_model: int):
        super().__init__()
        self.n = n
        self.tokens_SD = nn.Parameter(torch.empty(n, d_model))
        nn.init.normal_(self.tokens_SD, std=DEFAULT_STD)

    def forward(self, x_BTD: Tensor) -> Tensor:
        sink_BSD = self.tokens_SD.to(x_BTD.dtype).expand(x_BTD.shape[0], -1, -1)
        return torch.cat([sink_BSD, x_BTD], dim=1)


class NoSinkTokens(nn.Module):
    """No sink tokens: the sequence as it is."""

    n = 0

    def forward(self, x_BTD: Tensor) -> Tensor:
        return x_BTD


class GatedLM(nn.Module):
    def __init__(self, backbone: Backbone, arch: Architecture, kernel: Kernel = Kernel.SDPA):
        super().__init__()
        bb = backbone
        self.backbone, self.arch = bb, arch
        self.embed = nn.Embedding(bb.vocab_size, bb.d_model)
        nn.init.normal_(self.embed.weight, std=DEFAULT_STD)
        self.sink: SinkTokens | NoSinkTokens = (
            SinkTokens(arch.sink_tokens, bb.d_model) if arch.sink_tokens else NoSinkTokens())
        self.blocks = nn.ModuleList(Block(bb, arch, kernel) for _ in range(bb.n_layers))
        self.final_norm = RMSNorm(bb.d_model, bb.norm_eps)
        self.lm_head = nn.Linear(bb.d_model, bb.vocab_size, bias=False)
        if bb.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=DEFAULT_STD)

    def gates(self) -> list[Gate | Router]:
        """Every module that applies gate scores (gates, SwitchHead's routers), in layer
        order."""
        return [g for m in self.modules() if isinstance(m, Attention) for g in m.gates()]

    def num_params(self) -> int:
        """Parameters of the built module, each shared tensor (tied embeddings) counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx_BT: Tensor, return_probs: bool = False) -> LMOutput:
        h_BTD, aux_total, all_probs = self.final_hidden(idx_BT, return_probs)
        return LMOutput(self.lm_head(h_BTD), aux_total, all_probs)

    def final_hidden(self, idx_BT: Tensor, return_probs: bool = False
                     ) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        """``forward`` up to the LM head: the final-normed hidden state (B, T, D), the aux loss
        and the probabilities (a chunked loss applies the head a slice of tokens at a time)."""
        s = self.sink.n
        x_BTD = self.sink(self.embed(idx_BT))
        cos_TK, sin_TK = rope_tables(
            self.backbone.head_dim, x_BTD.shape[1], self.backbone.rope_base, device=idx_BT.device,
            yarn=self.backbone.yarn,
        )
        aux_total = x_BTD.new_zeros(())
        all_probs: list[Tensor] = []
        for block in self.blocks:
            x_BTD, aux, probs = block(x_BTD, cos_TK, sin_TK, return_probs)
            aux_total = aux_total + aux
            if probs is not None:  # asked for (a measurement hook may have taken it)
                all_probs.append(probs[:, :, s:, s:])
        return self.final_norm(x_BTD[:, s:]), aux_total, all_probs if return_probs else None
