"""Content hashes: a run's identity is the hash of what determines its result."""

from __future__ import annotations

import hashlib
import json

from registry.schema import VariantSpec, architecture_dict


def content_hash(data: object, length: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace), first ``length`` hex digits."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def spec_hash(spec: VariantSpec) -> str:
    """Hash of the architecture fields only: renaming a file or editing its description or
    paper numbers does not change it; two files that build the same model share it."""
    return content_hash(architecture_dict(spec))
