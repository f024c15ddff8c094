"""The gated-attention decoder LM. ``build_model(spec_or_id, size="tiny")`` builds what a spec
says; ``count_params`` counts what it builds."""

from gatelab.model.build import added_params, build_model, count_params, resolve_backbone
from gatelab.model.transformer import GatedLM, LMOutput

__all__ = ["GatedLM", "LMOutput", "added_params", "build_model", "count_params",
           "resolve_backbone"]
