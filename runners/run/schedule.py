"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``."""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def eval_steps(total: int, every: int, log_points: int | None = None) -> frozenset[int]:
    """The steps (1-based, up to ``total``) after which a run evaluates: each ``every``-th,
    or, with ``log_points``, about that many log-spaced from step 1 (rounded, repeats merged);
    the last step always."""
    if log_points is None:
        steps = set(range(every, total + 1, every))
    else:
        steps = {min(total, max(1, round(total ** (i / (log_points - 1)))))
                 for i in range(log_points)}
    return frozenset(steps | {total})
