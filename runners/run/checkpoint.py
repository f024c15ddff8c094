"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint that cannot be read (truncated, not a torch file, or missing a key the training
loop restores) is moved aside to ``<name>.corrupt-<UTC time>`` beside it, kept for inspection,
and reported as absent: the run restarts from step 0 (``train.py`` resumes the hash's MLflow
run when one is recorded), and the ``gatelab`` logger warns once, naming both files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("gatelab")

REQUIRED_KEYS = frozenset({
    "model", "optimizer", "generator", "spikes", "step", "first_loss", "max_grad_norm",
    "train_time_s", "tokens_seen", "recent_losses", "run_id",
})
"""The keys of the training loop's state (``LoopState.state`` in ``loop_state.py``); a
checkpoint without one of them cannot be resumed."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) so a crash mid-write leaves
    the previous checkpoint intact: a temporary file of this process's own, flushed to disk,
    then renamed over ``path``. A failed write removes its temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # else a power cut after the rename can leave it truncated
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` if there is no checkpoint or it cannot be read; an
    unreadable one is moved aside first (see the module docstring). Raises ``RuntimeError``
    if it cannot be moved, since keeping it would fail every later attempt the same way."""
    if not path.is_file():
        return None
    with path.open("rb") as f:  # an error opening it (permissions) is not its content's
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file fails in any of torch's ways, OSError too
            problem = _describe(err)
        else:
            invalid = _invalid(state)
            if invalid is None:
                return state
            problem = invalid
    moved = _move_aside(path, problem)
    logger.warning("checkpoint %s cannot be read (%s); moved it to %s and the run restarts "
                   "from step 0", path, problem, moved)
    return None


def _describe(err: Exception) -> str:
    """``err`` in one short line: its type and the start of its first line."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    first = lines[0] if len(lines[0]) <= 120 else lines[0][:117] + "..."
    return f"{type(err).__name__}: {first}"


def _invalid(state: object) -> str | None:
    """Why ``state`` is not a checkpoint the training loop can resume from, else ``None``."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a dict"
    missing = sorted(REQUIRED_KEYS - state.keys())
    if missing:
        return f"missing keys: {', '.join(missing)}"
    step, run_id = state["step"], state["run_id"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"step is {step!r}, not a step number"
    if not isinstance(run_id, str) or not run_id:
        return f"run_id is {run_id!r}, not an MLflow run id"
    if not isinstance(state["model"], dict):
        return f"model is a {type(state['model']).__name__}, not a state dict"
    return None


def _move_aside(path: Path, problem: str) -> Path:
    """Rename ``path`` to a name no other file has, ``<name>.corrupt-<UTC time>[-n]``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
    except OSError as err:
        raise RuntimeError(
            f"the checkpoint {path} cannot be read ({problem}) and cannot be moved aside "
            f"({err.strerror or err}); move it away by hand to restart the run from step 0"
        ) from None
    return target


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
