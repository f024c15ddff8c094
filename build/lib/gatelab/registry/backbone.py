"""The backbone of the decoder LM: its size and the parts every variant shares.

A ``Backbone`` is what a size preset names (``registry/presets.py``). A variant spec never
edits it directly; its ``capacity`` and ``param_match`` fields are applied by
``gatelab.model.build.resolve_backbone`` to give the backbone a model is built from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MoEConfig:
    """A top-k routed mixture of SwiGLU experts in place of the dense FFN."""

    n_experts: int
    top_k: int
    expert_hidden: int
    """Hidden width of each expert's SwiGLU."""
    aux_loss_coef: float = 0.01
    """Weight of the Switch-Transformer load-balancing loss added to the LM loss."""


@dataclass(frozen=True)
class Backbone:
    """A Qwen3-style decoder: RMSNorm, RoPE, SwiGLU (or MoE), GQA, optional QK-norm."""

    n_layers: int
    d_model: int
    n_heads: int
    """Query heads."""
    n_kv_heads: int
    """Key/value heads (grouped-query attention); divides ``n_heads``."""
    head_dim: int
    ffn_hidden: int
    """Hidden width of the dense SwiGLU FFN (ignored when ``moe`` is set)."""
    vocab_size: int
    rope_base: float = 10_000.0
    qk_norm: bool = True
    """RMSNorm on each head's query and key (after projection, before RoPE)."""
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    moe: MoEConfig | None = None
    """``None``: a dense SwiGLU FFN."""
