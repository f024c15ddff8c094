"""Evaluation of a run's model: the validation loss (also by position, for contexts beyond
the training length), the validation metrics logged from it, the measurements taken during
training, and the final evaluation that makes a run's summary (``RunSummary``)."""

from __future__ import annotations

import math

import torch

from gatelab.metrics import (
    DURING_TRAINING,
    Metric,
    context_metric,
    parse_layer_metric,
    position_metric,
)
from gatelab.model.transformer import GatedLM
from gatelab.run_summary import RunSummary
from gatelab.runners.data.batches import eval_batches
from gatelab.runners.data.tokens import bits_per_byte
from gatelab.runners.run.loop_state import LoopState
from gatelab.runners.run.loss import lm_loss, token_losses
from gatelab.runners.run.measurements import Internals
from gatelab.runners.run.numerics import Numerics


@torch.no_grad()
def evaluate(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, numerics: Numerics, micro_batch: int | None = None) -> float:
    """Mean over ``batches`` of each batch's mean cross-entropy, computed ``micro_batch``
    sequences at a time (``None``: a batch at once)."""
    was_training = model.training
    model.eval()
    total = 0.0
    with numerics.autocast():
        for x, y in batches:
            size = micro_batch or x.shape[0]
            parts = [lm_loss(model, xs.to(device), ys.to(device))[0] * (xs.numel() / x.numel())
                     for xs, ys in zip(x.split(size), y.split(size), strict=True)]
            total += (parts[0] if len(parts) == 1 else torch.stack(parts).sum()).item()
    model.train(was_training)
    return total / len(batches)


@torch.no_grad()
def evaluate_by_position(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]],
                         device: torch.device, numerics: Numerics, buckets: int,
                         micro_batch: int | None = None) -> tuple[float, list[float]]:
    """``evaluate``'s loss (every batch the same size) and the mean loss in each of ``buckets``
    equal slices of the positions (slice ``b``: ``[b*T//n, (b+1)*T//n)``): loss against
    position, where a model read beyond its training length shows it."""
    was_training = model.training
    model.eval()
    sums_T: torch.Tensor | None = None
    with numerics.autocast():
        for x, y in batches:
            size = micro_batch or x.shape[0]
            for xs, ys in zip(x.split(size), y.split(size), strict=True):
                part_T = token_losses(model, xs.to(device), ys.to(device)).double().sum(0)
                sums_T = part_T if sums_T is None else sums_T + part_T
    model.train(was_training)
    assert sums_T is not None
    mean_T = sums_T / sum(x.shape[0] for x, _ in batches)
    T = mean_T.shape[0]
    n = min(buckets, T)
    edges = [b * T // n for b in range(n + 1)]
    means = [mean_T[lo:hi].mean().item() for lo, hi in zip(edges, edges[1:], strict=False)]
    return mean_T.mean().item(), means


def internals_during_training(internals: Internals) -> dict[str, float]:
    """The measurements logged at an evaluation step (``DURING_TRAINING``, mean and per
    layer), so their history shows when a sink or a massive activation forms (all come from
    the one explicit-probabilities pass); gate scores only at the end."""
    return {name: value for name, value in internals.metrics().items()
            if _measured(name) in DURING_TRAINING}


def _measured(name: str) -> str:
    """The measurement a metric name is of: ``f_attn`` for ``f_attn`` and ``f_attn.layer03``."""
    layer = parse_layer_metric(name)
    return layer[0] if layer else name


def val_metrics(val_loss: float, bytes_per_token: float) -> dict[str, float]:
    """The validation loss (nats per token), its perplexity and its bits per byte."""
    return {Metric.VAL_LOSS: val_loss, Metric.VAL_PPL: math.exp(min(val_loss, 50.0)),
            Metric.VAL_BPB: bits_per_byte(val_loss, bytes_per_token)}


def final_evaluation(loop: LoopState, divergence: str | None, measure: list[torch.Tensor]
                     ) -> tuple[RunSummary, Internals | None]:
    """The summary of a run that ended (its numbers are its final step's metrics) and, for a
    run that did not diverge, its internals (``measure``: the fixed batches they are taken
    on): the validation loss at each ``long_context`` multiple of the training length (by
    position where the recipe asks), the validation metrics of the first, and the paper's
    measurements."""
    r, data = loop.recipe, loop.data
    metrics: dict[str, float] = {
        Metric.STEPS: loop.step,
        Metric.LOSS_SPIKES: loop.spikes.count, Metric.SPIKE_SCORE: loop.spikes.score,
        Metric.MAX_GRAD_NORM: loop.max_grad_norm,
        Metric.TRAIN_TIME_S: loop.train_time_s, Metric.PARAMS: loop.model.num_params(),
        Metric.VOCAB_SIZE: loop.model.backbone.vocab_size,
        Metric.TOKENS: loop.tokens_seen,
    }
    if loop.recent_losses:  # none where a stage only evaluates (steps: 0)
        metrics[Metric.TRAIN_LOSS_LAST20] = sum(loop.recent_losses) / len(loop.recent_losses)
    internals = None
    if divergence:
        metrics[Metric.DIVERGED_STEP] = loop.step
    else:
        for mult in r.long_context:
            metrics.update(_long_context(loop, mult))
        metrics.update(val_metrics(metrics[context_metric(r.long_context[0])],
                                   data.bytes_per_token["val"]))
        internals = loop.measure(measure)
        metrics.update(internals.metrics())
    metrics.update(loop.throughput())
    return RunSummary.from_metrics(metrics, divergence), internals


def _long_context(loop: LoopState, mult: int) -> dict[str, float]:
    """The validation loss of windows ``mult`` times the training length, and by position where
    the recipe asks (``position_buckets``)."""
    r = loop.recipe
    batch = max(1, r.batch_size // mult)
    batches = eval_batches(loop.data.val, batch, r.seq_len * mult, r.eval_batches, loop.eot_id)
    micro = max(1, loop.micro_batch // mult) if loop.micro_batch else None
    if not r.position_buckets:
        return {context_metric(mult): evaluate(loop.model, batches, loop.device, loop.numerics,
                                               micro)}
    loss, buckets = evaluate_by_position(loop.model, batches, loop.device, loop.numerics,
                                         r.position_buckets, micro)
    return {context_metric(mult): loss,
            **{position_metric(mult, b): v for b, v in enumerate(buckets)}}
