"""The backbone of the decoder LM: its size and the parts every variant shares.

A ``Backbone`` is what a size preset names (``registry/presets.py``). A variant spec never
edits it directly; its ``capacity`` and ``param_match`` fields are applied by
``gatelab.model.build.resolve_backbone`` to give the backbone a model is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatelab.registry.from_dict import Bound, bounded


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
class YarnScaling:
    """YaRN's RoPE scaling (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large
    Language Models", arXiv 2309.00071): NTK-by-parts interpolation of the rotary frequencies
    and the attention temperature ``sqrt(1/t) = 0.1 ln(factor) + 1`` (``gatelab.model.rope``).
    A frequency whose wavelength fits fewer than ``alpha`` times into ``original_len`` is
    interpolated (divided by ``factor``), one that fits more than ``beta`` times is kept, and
    the ones between are blended along a linear ramp. ``factor`` 1 changes nothing."""

    factor: float = bounded(4.0, Bound(ge=1, le=1024))
    """The context extension ``s``: the scaled model reads ``factor * original_len`` tokens.
    Allowed: >= 1 and <= 1024."""
    original_len: int = bounded(4096, Bound(ge=1, le=1_048_576))
    """The context length the model was trained at, in tokens (``L`` of the paper).
    Allowed: >= 1 and <= 1_048_576."""
    alpha: float = bounded(1.0, Bound(ge=0, le=1_000_000))
    """Below this many rotations over ``original_len`` a frequency is fully interpolated.
    Allowed: >= 0 and <= 1_000_000."""
    beta: float = bounded(32.0, Bound(gt=0, le=1_000_000))
    """Above this many rotations over ``original_len`` a frequency is kept; above ``alpha``.
    Allowed: > 0 and <= 1_000_000."""


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
    yarn: YarnScaling | None = None
    """YaRN scaling of RoPE (a context extension); ``None``: plain RoPE."""
    qk_norm: bool = True
    """RMSNorm on each head's query and key (after projection, before RoPE)."""
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    moe: MoEConfig | None = None
    """``None``: a dense SwiGLU FFN."""
