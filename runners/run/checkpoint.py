"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) so a crash mid-write leaves
    the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` if there is no checkpoint."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
