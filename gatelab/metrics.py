"""The names of the metrics a training run logs, and who reads each: the contract between the
code that writes them (``gatelab.runners.run``) and the code that reads them (the dashboards,
the CLI, the sweep). Both sides import this module; it imports nothing of gatelab.

A name is a ``Metric``, or one built from one by a naming rule:

- per layer: ``f_attn.layer03`` (``layer_metric``, ``parse_layer_metric``), for the metrics in
  ``PER_LAYER``; the plain name is the mean over layers;
- long context: ``val_loss_ctx4x``, the validation loss of windows 4 times the training length
  (``context_metric``, ``parse_context_metric``), and ``val_loss_ctx4x.pos2``, the loss in the
  third equal slice of the positions of those windows (``position_metric``,
  ``parse_position_metric``).

``READ_BY`` declares who reads each metric and each naming rule; a test checks it against what
the runner writes and against what each reader's modules name, both ways. The names are those
recorded runs hold: a rename leaves every recorded run unread, so a name never changes.
"""

from __future__ import annotations

import enum
import re


class Metric(enum.StrEnum):
    """Every metric a training run logs under a fixed name (``m_act``: a massive activation,
    ``f_attn``: the attention put on the first token, as the paper defines them;
    ``gatelab.runners.run.measurements``)."""

    TRAIN_LOSS = "train_loss"
    """Each step: the step's training loss, nats per token."""
    LR = "lr"
    """Each step: the learning rate of the schedule at that step."""
    GRAD_NORM = "grad_norm"
    """Each step: the gradient's global L2 norm before clipping."""
    LOSS_SPIKE = "loss_spike"
    """At a step whose loss is a spike (``SpikeDetector``): that loss, nats per token."""

    VAL_LOSS = "val_loss"
    """At each evaluation and at the end: the validation loss at the training length, nats per
    token."""
    VAL_PPL = "val_ppl"
    """``exp(val_loss)`` (capped at ``exp(50)``)."""
    VAL_BPB = "val_bpb"
    """The validation loss in bits per byte of text."""
    F_ATTN = "f_attn"
    """The attention probability queries put on the first token (0..1), mean over layers; at
    each evaluation and at the end."""
    M_ACT = "m_act"
    """The largest absolute hidden-state value of a layer's output, mean over layers."""
    SINK_HEAD_MAX = "sink_head_max"
    """The largest head's first-token share (0..1), mean over layers."""
    SINK_HEADS_FRAC = "sink_heads_frac"
    """The fraction of heads whose first-token share exceeds ``SINK_HEAD_THRESHOLD``."""
    VALUE_DRAIN = "value_drain"
    """The first token's value-state norm over the others' mean norm (a ratio)."""
    RESID_PEAK_FIRST = "resid_peak_first"
    """The fraction of sequences whose largest residual-stream norm is at position 0."""
    GATE_SCORE_MEAN = "gate_score.mean"
    """At the end, for a gated model: the mean gate score over elements, tokens and layers."""
    GATE_SCORE_FRAC_BELOW_001 = "gate_score.frac_below_0.01"
    """The fraction of gate scores below 0.01."""
    GATE_SCORE_FRAC_BELOW_01 = "gate_score.frac_below_0.1"
    """The fraction of gate scores below 0.1."""

    TOKENS_PER_S = "tokens_per_s"
    """At each evaluation and at the end: training tokens per second (after the process's first
    step, which compiles)."""
    FLOPS_PER_TOKEN = "flops_per_token"
    """Training FLOPs per token, counted from the built model (the PaLM convention)."""
    ACHIEVED_FLOPS = "achieved_flops"
    """``tokens_per_s * flops_per_token``, FLOP/s."""
    MFU = "mfu"
    """Achieved over the GPU's dense bf16 peak FLOP/s (a fraction); only on a known GPU."""
    PEAK_DEVICE_MEM_GB = "peak_device_mem_gb"
    """On CUDA: the most memory tensors held at once, GB (1e9 bytes)."""
    PEAK_RSS_GB = "peak_rss_gb"
    """On CPU: the process's largest resident set, GB (1e9 bytes)."""
    MEASURE_TIME_S = "measure_time_s"
    """Seconds this process spent in the paper's measurements."""

    STEPS = "steps"
    """At the end: the steps the run made."""
    TOKENS = "tokens"
    """At the end: the training tokens the run consumed."""
    PARAMS = "params"
    """At the end: the built model's parameter count."""
    VOCAB_SIZE = "vocab_size"
    """At the end: the tokenizer's vocabulary size."""
    LOSS_SPIKES = "loss_spikes"
    """At the end: how many steps were loss spikes."""
    SPIKE_SCORE = "spike_score"
    """At the end: the summed excess loss of the spikes over their rolling mean, nats."""
    MAX_GRAD_NORM = "max_grad_norm"
    """At the end: the largest gradient norm before clipping."""
    TRAIN_TIME_S = "train_time_s"
    """At the end: seconds spent in training steps (every process of a resumed run)."""
    TRAIN_LOSS_LAST20 = "train_loss_last20"
    """At the end: the mean training loss of the last 20 steps, nats per token (none where a
    stage only evaluates)."""
    DIVERGED_STEP = "diverged_step"
    """At the end of a diverged run: the step it diverged at."""


PER_LAYER: frozenset[Metric] = frozenset({
    Metric.F_ATTN, Metric.M_ACT, Metric.SINK_HEAD_MAX, Metric.SINK_HEADS_FRAC,
    Metric.VALUE_DRAIN, Metric.RESID_PEAK_FIRST, Metric.GATE_SCORE_MEAN,
    Metric.GATE_SCORE_FRAC_BELOW_001, Metric.GATE_SCORE_FRAC_BELOW_01,
})
"""The metrics also logged per layer (``layer_metric``); the plain name is their layer mean."""

DURING_TRAINING: frozenset[Metric] = frozenset({
    Metric.F_ATTN, Metric.M_ACT, Metric.SINK_HEAD_MAX, Metric.SINK_HEADS_FRAC,
    Metric.VALUE_DRAIN, Metric.RESID_PEAK_FIRST,
})
"""The measurements also logged at each evaluation (mean and per layer), so their history shows
when a sink or a massive activation forms; the gate scores only at the end."""

_LAYER = re.compile(r"^(?P<metric>.+)\.layer(?P<layer>\d+)$")


def layer_metric(metric: Metric, layer: int) -> str:
    """The name of ``metric`` in layer ``layer`` (from 0): ``f_attn.layer03``."""
    return f"{metric}.layer{layer:02d}"


def parse_layer_metric(name: str) -> tuple[Metric, int] | None:
    """``(metric, layer)`` of a per-layer name (``layer_metric``); ``None`` for any other."""
    found = _LAYER.match(name)
    if found is None or found["metric"] not in _PER_LAYER_NAMES:
        return None
    return Metric(found["metric"]), int(found["layer"])


_PER_LAYER_NAMES = frozenset(m.value for m in PER_LAYER)

CONTEXT_PATTERN = rf"^{re.escape(Metric.VAL_LOSS)}_ctx(\d+)x$"
"""The long-context loss names (``context_metric``); group 1: the multiple of the training
length. A regular expression that Python and Polars read alike."""
POSITION_PATTERN = rf"^{re.escape(Metric.VAL_LOSS)}_ctx(\d+)x\.pos(\d+)$"
"""The per-position loss names (``position_metric``); groups: the multiple, then the bucket."""


def context_metric(multiple: int) -> str:
    """The validation loss of windows ``multiple`` times the training length: ``val_loss_ctx4x``
    (the first multiple a recipe evaluates is also its ``val_loss``)."""
    return f"{Metric.VAL_LOSS}_ctx{multiple}x"


def position_metric(multiple: int, bucket: int) -> str:
    """The mean validation loss in bucket ``bucket`` (from 0) of equal slices of the positions of
    windows ``multiple`` times the training length: ``val_loss_ctx4x.pos2``."""
    return f"{context_metric(multiple)}.pos{bucket}"


def parse_context_metric(name: str) -> int | None:
    """The multiple of a long-context loss name (``context_metric``); ``None`` for any other."""
    found = re.match(CONTEXT_PATTERN, name)
    return int(found[1]) if found else None


def parse_position_metric(name: str) -> tuple[int, int] | None:
    """``(multiple, bucket)`` of a per-position loss name (``position_metric``); ``None`` for
    any other."""
    found = re.match(POSITION_PATTERN, name)
    return (int(found[1]), int(found[2])) if found else None


def is_declared(name: str) -> bool:
    """Whether ``name`` is a metric a training run may log: a ``Metric``, or a name one of the
    naming rules builds."""
    return (name in _NAMES or parse_layer_metric(name) is not None
            or parse_context_metric(name) is not None or parse_position_metric(name) is not None)


_NAMES = frozenset(m.value for m in Metric)


class Rule(enum.StrEnum):
    """The naming rules, as ``READ_BY`` names them."""

    LAYER = "per layer"
    """``layer_metric``."""
    CONTEXT = "long context"
    """``context_metric``."""
    POSITION = "loss by position"
    """``position_metric``."""


RULE_FUNCTIONS: dict[Rule, frozenset[str]] = {
    Rule.LAYER: frozenset({"layer_metric", "parse_layer_metric"}),
    Rule.CONTEXT: frozenset({"context_metric", "parse_context_metric", "CONTEXT_PATTERN"}),
    Rule.POSITION: frozenset({"position_metric", "parse_position_metric", "POSITION_PATTERN"}),
}
"""The names of this module a reader of a rule's names uses (what the contract's test looks
for in a reader's modules)."""


class Reader(enum.StrEnum):
    """Who reads metrics: a module (or package) of gatelab, by its import path, or people."""

    DASHBOARDS = "gatelab.dashboards"
    """The run frame's columns, the tables, verdicts, plots and report."""
    TRAIN_SUMMARY = "gatelab.cli.train_summary"
    """The summary ``gatelab train`` prints."""
    LIVE_VIEW = "gatelab.cli.live_view"
    """A sweep's live view, as each run ends."""
    SWEEP_SUMMARY = "gatelab.runners.sweep.driver"
    """The summary rows of a finished sweep."""
    LR_SEARCH = "gatelab.runners.sweep.lr_search"
    """The Optuna LR search's objective."""
    SWEEP_PLAN = "gatelab.runners.sweep.plan"
    """The dry run's compute estimate."""
    MLFLOW_UI = "mlflow ui"
    """People, in MLflow's charts and run pages: no gatelab code reads it."""


_D, _T, _L, _S = Reader.DASHBOARDS, Reader.TRAIN_SUMMARY, Reader.LIVE_VIEW, Reader.SWEEP_SUMMARY

READ_BY: dict[Metric | Rule, frozenset[Reader]] = {
    Metric.TRAIN_LOSS: frozenset({_D}),
    Metric.LR: frozenset({Reader.MLFLOW_UI}),
    Metric.GRAD_NORM: frozenset({Reader.MLFLOW_UI}),
    Metric.LOSS_SPIKE: frozenset({Reader.MLFLOW_UI}),
    Metric.VAL_LOSS: frozenset({_D, _T, _L, _S, Reader.LR_SEARCH}),
    Metric.VAL_PPL: frozenset({_D, _T}),
    Metric.VAL_BPB: frozenset({_D, _T, _S}),
    Metric.F_ATTN: frozenset({_D, _T, _S}),
    Metric.M_ACT: frozenset({_D, _T, _S}),
    Metric.SINK_HEAD_MAX: frozenset({_D}),
    Metric.SINK_HEADS_FRAC: frozenset({_D}),
    Metric.VALUE_DRAIN: frozenset({_D}),
    Metric.RESID_PEAK_FIRST: frozenset({_D}),
    Metric.GATE_SCORE_MEAN: frozenset({_D, _T, _S}),
    Metric.GATE_SCORE_FRAC_BELOW_001: frozenset({_D}),
    Metric.GATE_SCORE_FRAC_BELOW_01: frozenset({_D, _T}),
    Metric.TOKENS_PER_S: frozenset({_D, _T, Reader.SWEEP_PLAN}),
    Metric.FLOPS_PER_TOKEN: frozenset({_T}),
    Metric.ACHIEVED_FLOPS: frozenset({_T}),
    Metric.MFU: frozenset({_T}),
    Metric.PEAK_DEVICE_MEM_GB: frozenset({_T}),
    Metric.PEAK_RSS_GB: frozenset({_T}),
    Metric.MEASURE_TIME_S: frozenset({_T}),
    Metric.STEPS: frozenset({_D}),
    Metric.TOKENS: frozenset({_D}),
    Metric.PARAMS: frozenset({_D}),
    Metric.VOCAB_SIZE: frozenset({Reader.LR_SEARCH}),
    Metric.LOSS_SPIKES: frozenset({_D, _T, _S}),
    Metric.SPIKE_SCORE: frozenset({_D, _T}),
    Metric.MAX_GRAD_NORM: frozenset({_D, _T, _S}),
    Metric.TRAIN_TIME_S: frozenset({_D, _T}),
    Metric.TRAIN_LOSS_LAST20: frozenset({Reader.MLFLOW_UI}),
    Metric.DIVERGED_STEP: frozenset({_T}),
    Rule.LAYER: frozenset({_D}),
    Rule.CONTEXT: frozenset({_D, _T}),
    Rule.POSITION: frozenset({_D}),
}
"""Who reads each metric and each rule's names; every one has a reader (``MLFLOW_UI`` where no
code does). A reader that starts or stops reading one changes this table in the same commit."""

CLAIMS_METRIC_PREFIX = "claims."
"""A summary run (``gatelab report``) logs ``claims.<verdict key>``: how many claims got that
verdict (``gatelab.verdict.Verdict.key``)."""
SUMMARY_RUN_COUNT = "runs"
"""A summary run's metric: how many training runs it summarises."""


def claims_metric(verdict_key: str) -> str:
    """The summary run's count of the verdict ``verdict_key``: ``claims.reproduced``."""
    return f"{CLAIMS_METRIC_PREFIX}{verdict_key}"
