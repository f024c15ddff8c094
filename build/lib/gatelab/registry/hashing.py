"""The content hash of a spec's architecture (a run's identity is ``gatelab.identity``'s)."""

from __future__ import annotations

from gatelab.identity import content_hash
from gatelab.registry.schema import VariantSpec, architecture_dict

__all__ = ["content_hash", "spec_hash"]


def spec_hash(spec: VariantSpec) -> str:
    """Hash of the architecture fields only: renaming a file or editing its description or
    paper numbers does not change it; two files that build the same model share it."""
    return content_hash(architecture_dict(spec))
