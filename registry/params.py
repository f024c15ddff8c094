"""Parameter counts of a variant, always taken from the built module (meta device)."""

from __future__ import annotations

from registry.backbone import Backbone
from registry.resolve import count_built, resolve_backbone
from registry.schema import VariantSpec

BASELINE = VariantSpec(id="baseline", description="", hypothesis="")
"""The root architecture (no gate, pre-norm, the preset's size): what ``added_params`` counts
from."""


def count_params(spec: VariantSpec, preset: str | Backbone) -> int:
    """Total parameters of ``spec`` built at ``preset`` (tied embeddings counted once)."""
    backbone = resolve_backbone(spec, preset)
    return count_built(backbone, spec.gate, spec.sdpa_control, spec.norm)


def added_params(spec: VariantSpec, preset: str | Backbone) -> int:
    """Parameters ``spec`` adds to the baseline at the same preset (negative if it removes)."""
    return count_params(spec, preset) - count_params(BASELINE, preset)
