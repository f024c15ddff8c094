"""The summary of a training run that ended, typed: its final step's metrics as fields.

``train`` returns it (``RunResult.summary``, across the Ray boundary too), logs it with
``to_metrics`` and writes it as the ``summary.json`` artifact; a run already recorded is read
back into one with ``from_metrics``. The CLI, the sweep's driver and the LR search read its
fields. Each metric field is named after its ``Metric`` member (``gate_score_mean`` for
``Metric.GATE_SCORE_MEAN``); the per-layer and long-context metrics, whose names depend on the
model and the recipe, are in ``named``. Imports nothing of gatelab but its contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from gatelab.metrics import (
    Metric,
    parse_context_metric,
    parse_layer_metric,
    parse_position_metric,
)


class SummaryError(ValueError):
    """Metrics that do not make a run's summary; the message names the metric."""


@dataclass(frozen=True)
class RunSummary:
    """A run's final numbers (the metrics of its last step). Fields that every ending run logs
    are required; ``None``: the run logged no such metric (a diverged run has no validation or
    measurements, a model without gates no gate scores, a CPU no GPU memory, a run recorded by
    an older gatelab none of what it did not know)."""

    steps: int
    """Steps the run made."""
    tokens: int
    """Training tokens the run consumed."""
    params: int
    """The built model's parameter count."""
    vocab_size: int
    """The tokenizer's vocabulary size."""
    loss_spikes: int
    """Steps that were loss spikes."""
    spike_score: float
    """The spikes' summed excess loss over their rolling mean, nats."""
    max_grad_norm: float
    """The largest gradient norm before clipping."""
    train_time_s: float
    """Seconds spent in training steps."""
    train_loss_last20: float | None = None
    """The mean training loss of the last 20 steps, nats per token."""
    diverged_step: int | None = None
    """The step a diverged run diverged at; ``None``: it did not."""
    val_loss: float | None = None
    """Validation loss at the training length, nats per token."""
    val_ppl: float | None = None
    """Validation perplexity."""
    val_bpb: float | None = None
    """Validation bits per byte."""
    f_attn: float | None = None
    """Attention on the first token (0..1), mean over layers."""
    m_act: float | None = None
    """Largest absolute hidden-state value, mean over layers."""
    sink_head_max: float | None = None
    """The largest head's first-token share (0..1), mean over layers."""
    sink_heads_frac: float | None = None
    """The fraction of sink heads, mean over layers."""
    value_drain: float | None = None
    """The first token's value-state norm over the others' (a ratio), mean over layers."""
    resid_peak_first: float | None = None
    """The fraction of sequences whose peak residual norm is at token 0, mean over layers."""
    gate_score_mean: float | None = None
    """The mean gate score."""
    gate_score_frac_below_001: float | None = None
    """The fraction of gate scores below 0.01."""
    gate_score_frac_below_01: float | None = None
    """The fraction of gate scores below 0.1."""
    tokens_per_s: float | None = None
    """Training tokens per second (after the process's first step)."""
    flops_per_token: float | None = None
    """Training FLOPs per token of the built model."""
    achieved_flops: float | None = None
    """Achieved FLOP/s."""
    mfu: float | None = None
    """Model FLOPs utilisation of a known GPU (a fraction)."""
    peak_device_mem_gb: float | None = None
    """Peak CUDA memory held by tensors, GB."""
    peak_rss_gb: float | None = None
    """Peak resident memory of the process (CPU), GB."""
    measure_time_s: float | None = None
    """Seconds this process spent in the measurements."""
    named: Mapping[str, float] = field(default_factory=dict)
    """The per-layer and long-context metrics (``f_attn.layer03``, ``val_loss_ctx2x``,
    ``val_loss_ctx2x.pos1``), by name."""
    divergence: str | None = None
    """Why a diverged run diverged (the ``gatelab.divergence`` tag; not a metric)."""

    def to_metrics(self) -> dict[str, float]:
        """The summary as MLflow metrics (every number present, as a float), by name."""
        out = {metric.value: float(value) for metric, value in self._fixed().items()}
        out.update({name: float(value) for name, value in self.named.items()})
        return out

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values (integers kept), ``divergence`` included where set:
        the ``summary.json`` artifact's content beside the status."""
        out: dict[str, Any] = {metric.value: value for metric, value in self._fixed().items()}
        out.update(self.named)
        if self.divergence is not None:
            out["divergence"] = self.divergence
        return out

    def _fixed(self) -> dict[Metric, int | float]:
        return {metric: value for metric, name in _FIELD_METRICS.items()
                if (value := getattr(self, name)) is not None}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], divergence: str | None = None,
                     strict: bool = True) -> RunSummary:
        """The summary of a run's final ``metrics`` (by name). ``strict`` (the runner's own
        summary): a name that is not a summary's metric is a ``SummaryError``; otherwise (a
        recorded run's latest metrics, where the per-step ones and MLflow's ``system/*`` sit
        beside them) it is left out. A required metric missing is a ``SummaryError``."""
        values: dict[str, Any] = {}
        named: dict[str, float] = {}
        for name, value in metrics.items():
            if name in _METRIC_FIELDS:
                values[_METRIC_FIELDS[name]] = value
            elif _is_named(name):
                named[name] = float(value)
            elif strict:
                raise SummaryError(f"{name!r} is not a metric of a run's summary; add it to "
                                   "gatelab.metrics.Metric and to RunSummary (gatelab/"
                                   "run_summary.py), or log it during training instead")
        missing = [f.name for f in _REQUIRED if f.name not in values]
        if missing:
            raise SummaryError(f"the metrics {missing} are missing from a run's summary; every "
                               "run that ends logs them (gatelab.runners.run.evaluate)")
        typed = {name: int(v) if name in _INT_FIELDS and v is not None else v
                 for name, v in values.items()}
        return cls(**typed, named=named, divergence=divergence)


def _is_named(name: str) -> bool:
    return (parse_layer_metric(name) is not None or parse_context_metric(name) is not None
            or parse_position_metric(name) is not None)


_NOT_METRICS = frozenset({"named", "divergence"})
_FIELD_METRICS: dict[Metric, str] = {Metric[f.name.upper()]: f.name
                                     for f in fields(RunSummary) if f.name not in _NOT_METRICS}
"""Each metric field's ``Metric`` (the field is named after the member)."""
_METRIC_FIELDS: dict[str, str] = {m.value: name for m, name in _FIELD_METRICS.items()}
_REQUIRED = [f for f in fields(RunSummary)
             if f.default is MISSING and f.default_factory is MISSING]
_INT_FIELDS = frozenset(f.name for f in fields(RunSummary)
                        if f.type in ("int", "int | None"))
"""Integer fields: a recorded run's metrics come back as floats."""
