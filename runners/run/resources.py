"""Resources and places of a run: where it computes and records, never part of its identity.

``device``, ``precision`` and ``backend`` choose the numerics, which *are* part of the identity
once resolved (``numerics.py``); threads, paths and the tracking store are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gatelab.model.attention_ops import KernelChoice
from gatelab.runners.run.numerics import Numerics, PrecisionChoice, resolve_numerics
from gatelab.runners.run.storage import Storage


@dataclass(frozen=True)
class Resources:
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: PrecisionChoice = PrecisionChoice.AUTO
    backend: KernelChoice = KernelChoice.AUTO
    """Attention kernel for training: auto (flash-attn on CUDA in bf16 if installed, else
    SDPA), sdpa, flash, explicit."""
    threads: int | None = None
    """CPU threads for torch; ``None``: torch's default (all cores)."""
    tracking_uri: str | None = None
    """``None``: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working dir."""
    experiment: str = "gatelab"
    work_dir: Path = Path(".gatelab")
    """This node's folder: checkpoints (``work_dir/checkpoints/<run hash>``), leases and the
    token cache live here unless ``storage`` names another place."""
    storage: str | None = None
    """Where checkpoints, leases and the token cache live when runs share them across nodes:
    a shared path or an fsspec URI (``storage.py``); ``None``: ``$GATELAB_STORAGE``, else
    ``work_dir``."""

    def place(self) -> Storage:
        """Where this run's durable files live (``storage.py``)."""
        return Storage.resolve(self.storage, self.work_dir)

    def numerics(self) -> Numerics:
        return resolve_numerics(self.device, self.precision, self.backend)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device(self.numerics().device_type.value)
        return torch.device(self.device)
