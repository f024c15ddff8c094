"""The one way to build a model: a spec (or its id, or its architecture) and a size in, a
``GatedLM`` out; parameter counts are taken from modules built the same way (meta device).

``resolve_backbone`` applies the spec's capacity (``gatelab.registry.resolve``) and its
parameter matching, which needs counts of built modules and therefore lives here.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import torch

from gatelab.model.attention_ops import Kernel
from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.registry.presets import PAPER_TABLE1_PRESET
from gatelab.registry.resolve import apply_capacity, with_ffn_width
from gatelab.registry.schema import Architecture, VariantSpec

SpecLike = VariantSpec | Architecture | str
"""A spec, its architecture, or a variant id in ``ablations/``."""


def architecture_of(spec: SpecLike) -> tuple[Architecture, str]:
    """(architecture, a name for error messages)."""
    if isinstance(spec, str):
        spec = load_variant(spec)
    if isinstance(spec, VariantSpec):
        return spec.architecture, spec.id
    return spec, "the architecture"


def resolve_backbone(spec: SpecLike, size: str | Backbone = "tiny") -> Backbone:
    """The backbone ``spec`` builds at ``size``: capacity applied, then the FFN narrowed when
    the spec asks for parameter matching."""
    arch, name = architecture_of(spec)
    backbone = apply_capacity(arch, size, name)
    if arch.param_match:
        backbone = _match_params(arch, backbone)
    return backbone


def build_model(spec: SpecLike, size: str | Backbone = "tiny",
                device: torch.device | str | None = None, *, vocab_size: int | None = None,
                kernel: Kernel | str = Kernel.SDPA, dtype: torch.dtype | None = None
                ) -> GatedLM:
    """The model ``spec`` describes at ``size``; ``device="meta"`` allocates nothing.
    ``vocab_size`` replaces the size's (training sets it to the tokenizer's)."""
    arch, _ = architecture_of(spec)
    backbone = resolve_backbone(spec, size)
    if vocab_size is not None:
        backbone = dataclasses.replace(backbone, vocab_size=vocab_size)
    with torch.device(device or "cpu"):
        model = GatedLM(backbone, arch, Kernel(kernel))
    return model.to(dtype) if dtype is not None else model


def count_params(spec: SpecLike, size: str | Backbone = "tiny") -> int:
    """Total parameters of ``spec`` built at ``size`` (tied embeddings counted once)."""
    arch, _ = architecture_of(spec)
    return _count_built(resolve_backbone(spec, size), arch)


def added_params(spec: SpecLike, size: str | Backbone = PAPER_TABLE1_PRESET) -> int:
    """Parameters ``spec`` adds to the plain baseline (no gate, pre-norm) at the same size."""
    return count_params(spec, size) - count_params(Architecture(), size)


@cache
def _count_built(backbone: Backbone, arch: Architecture) -> int:
    with torch.device("meta"):
        return GatedLM(backbone, arch).num_params()


def _match_params(arch: Architecture, bb: Backbone) -> Backbone:
    """Narrow the dense FFN (or each expert) so the total equals the same architecture's
    without its gate, control, attention experts, sink tokens or learned sink logits. The
    count is linear in the width, so two builds find it."""
    plain = Architecture(norm=arch.norm, capacity=arch.capacity)
    target = _count_built(bb, plain)
    width = bb.moe.expert_hidden if bb.moe is not None else bb.ffn_hidden
    at_width = _count_built(bb, arch)
    per_unit = at_width - _count_built(with_ffn_width(bb, width - 1), arch)
    return with_ffn_width(bb, width - round((at_width - target) / per_unit))
