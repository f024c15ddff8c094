"""What a training run hands out: its progress after each step, the state an ``on_eval``
callback sees at each evaluation, and its outcome (``RunResult``, which crosses the Ray
boundary from a sweep's workers to its driver)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gatelab.contract import RunStatus
from gatelab.model.transformer import GatedLM
from gatelab.run_summary import RunSummary


@dataclass
class Progress:
    """What a progress callback receives after each step."""

    step: int
    total: int
    loss: float
    """The step's training loss, in nats per token."""
    tokens_per_s: float
    """Training tokens per second of training time so far."""


@dataclass(frozen=True)
class EvalPoint:
    """What an ``on_eval`` callback receives at each evaluation (after the step's update)."""

    step: int
    total: int
    train_time_s: float
    """Seconds spent in training steps so far."""
    val_loss: float
    """Mean validation cross-entropy, in nats per token."""
    train_losses: tuple[float, ...]
    """Training losses of the steps since the previous evaluation."""
    model: GatedLM
    measure_batches: list[torch.Tensor]
    """Inputs (B, T) of the fixed validation windows the measurements use."""
    eot_id: int


@dataclass
class RunResult:
    """The outcome of one run: what ``train`` returns and what crosses the Ray boundary."""

    run_id: str | None
    """``None`` when the run failed before its MLflow run existed."""
    run_hash: str
    status: RunStatus
    summary: RunSummary | None = None
    """The final numbers of a run that finished or diverged; ``None`` for any other."""
    skipped: bool = False
    """True when the hash had already finished and nothing was trained."""
    cause: str | None = None
    """Why a failed run failed."""
