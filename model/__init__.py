"""The gated-attention decoder LM: ``build_model(spec, preset)`` builds what a spec says."""

from model.transformer import GatedLM, LMOutput

__all__ = ["GatedLM", "LMOutput"]
