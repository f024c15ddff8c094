"""``build_model``: a spec and a size preset in, a ``GatedLM`` out."""

from __future__ import annotations

import torch

from model.transformer import GatedLM
from registry.backbone import Backbone
from registry.resolve import resolve_backbone
from registry.schema import VariantSpec


def build_model(
    spec: VariantSpec,
    preset: str | Backbone,
    backend: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> GatedLM:
    """The model ``spec`` describes at ``preset``; ``device="meta"`` allocates nothing."""
    backbone = resolve_backbone(spec, preset)
    with torch.device(device or "cpu"):
        model = GatedLM(backbone, spec, backend)
    return model.to(dtype) if dtype is not None else model
