"""Resources and places of a run: never part of its identity (hash)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Resources:
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int | None = None
    """CPU threads for torch; ``None``: torch's default (all cores)."""
    backend: str = "auto"
    """Attention kernel for training: auto (flash-attn on CUDA if installed, else SDPA), sdpa,
    flash, explicit."""
    tracking_uri: str | None = None
    """``None``: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working dir."""
    experiment: str = "gatelab"
    work_dir: Path = Path(".gatelab")
    """Checkpoints (``work_dir/checkpoints/<run hash>``) and the token cache live here."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
