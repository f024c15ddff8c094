"""The contract between the code that writes runs (``gatelab.runners``) and the code that reads
them (``gatelab.dashboards``, the CLI): run statuses, plan states, every tag name, the sweep
tag, where a tracking URI points, and the names of the artifacts a run logs (the internals'
arrays too). Both sides import this module; it imports neither. The metric names, which come
with naming rules and a table of their readers, are in ``gatelab.metrics``.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path


class RunStatus(enum.StrEnum):
    """The ``gatelab.status`` tag of a training run."""

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    """Ended early on a loss blow-up: a result, not an error."""
    FAILED = "failed"
    """Raised, or its worker died; the cause is in ``gatelab.failure``."""
    INTERRUPTED = "interrupted"
    """Stopped by a signal (Ctrl-C, or SIGTERM: a preemption) at a step boundary; its checkpoint
    resumes it (``gatelab.interrupted_step`` and ``gatelab.interrupted_by`` say where and
    why)."""
    MISSING = "missing"
    """Never recorded: the run failed before its MLflow run existed (shown, never written)."""


def parse_status(raw: object) -> RunStatus | None:
    """The status a tag holds; ``None`` for a missing or unknown value."""
    return RunStatus(raw) if isinstance(raw, str) and raw in _STATUS_VALUES else None


_STATUS_VALUES = frozenset(s.value for s in RunStatus)

DONE_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.FINISHED, RunStatus.DIVERGED})
"""Statuses whose result is final: such a hash is never trained again."""


class PlanState(enum.StrEnum):
    """What a sweep will do with one planned run."""

    DONE = "done"
    TO_RUN = "to run"
    RESUME = "resume"
    """Interrupted, or left running by a killed driver: continues from its checkpoint."""
    FAILED = "failed"
    """Its last attempt failed: rerun only with ``--retry-failed``."""
    STALE = "stale"
    """The sweep recorded this variant, seed and LR under an identity that no longer matches
    (a size preset, the corpus, the numerics or the identity rules changed): trained anew, the
    old run is kept but leaves the sweep."""


TO_TRAIN: frozenset[PlanState] = frozenset({PlanState.TO_RUN, PlanState.RESUME,
                                            PlanState.STALE})
"""Plan states that a sweep trains."""


TAG_PREFIX = "gatelab."
"""Every gatelab tag starts with it."""


class Tag(enum.StrEnum):
    """Every tag gatelab writes on an MLflow run."""

    RUN_HASH = "gatelab.run_hash"
    """The run's identity (``gatelab.identity``): every training run has one."""
    SETTING_HASH = "gatelab.setting_hash"
    """The identity without the seed: runs sharing it are the seeds of one setting."""
    LR_SETTING_HASH = "gatelab.lr_setting_hash"
    """The identity without the seed and the peak LR: the points of one LR grid."""
    IDENTITY_VERSION = "gatelab.identity_version"
    STATUS = "gatelab.status"
    VARIANT = "gatelab.variant"
    SIZE = "gatelab.size"
    SEED = "gatelab.seed"
    LR = "gatelab.lr"
    POSITION = "gatelab.position"
    GRANULARITY = "gatelab.granularity"
    PAPER_ROW = "gatelab.paper_row"
    DATA = "gatelab.data"
    DEVICE = "gatelab.device"
    """``cpu`` or ``cuda``."""
    PRECISION = "gatelab.precision"
    KERNEL = "gatelab.kernel"
    """The attention kernel family the run trained with: ``sdpa``, ``flash`` or ``explicit``."""
    TORCH_VERSION = "gatelab.torch_version"
    GIT_COMMIT = "gatelab.git_commit"
    GIT_DIRTY = "gatelab.git_dirty"
    CODE_HASH = "gatelab.code_hash"
    """SHA-256 of the installed package's source and YAML: the code version of a run that
    trained without ``.git`` (a Ray job's copy, a wheel)."""
    NODE = "gatelab.node"
    """Where the run (last) trained: the Ray node id and host, or the host outside Ray."""
    FAILURE = "gatelab.failure"
    """The latest failure's cause; cleared when the run later finishes (its history stays in the
    run's ``failures.json``)."""
    INTERRUPTED_STEP = "gatelab.interrupted_step"
    """On a run stopped by a signal: the step it had reached, where it checkpointed (a run
    interrupted in the middle of a step resumes from its previous checkpoint)."""
    INTERRUPTED_BY = "gatelab.interrupted_by"
    """On a run stopped by a signal: the signal's name (``SIGTERM``, ``SIGINT``)."""
    DIVERGED_STEP = "gatelab.diverged_step"
    DIVERGENCE = "gatelab.divergence"
    PARENT_HASH = "gatelab.parent_hash"
    """On a stage (a run that continues from another's final weights): the parent's run hash."""
    PARENT_RUN_ID = "gatelab.parent_run_id"
    """On a stage: the parent's MLflow run id. Not ``mlflow.parentRunId``, which nests runs
    in the UI for another purpose."""
    STAGE = "gatelab.stage"
    """On a stage a sweep ran: the stage's name in the sweep (``extend``, ``yarn``...)."""
    SUMMARY = "gatelab.summary"
    """Set on the summary runs ``gatelab report`` writes; those are never training runs."""
    SUMMARY_SWEEP = "gatelab.summary.sweep"
    """On a summary run: the sweep it summarises."""
    SUMMARY_RUNS = "gatelab.summary.runs"
    """On a summary run: how many training runs it summarises."""
    SWEEP_PARENT = "gatelab.sweep_parent"
    """On a sweep's parent run (``runners/sweep/parent.py``): the sweep's name. A parent run
    has no ``gatelab.run_hash`` and no sweep tag: it is never a training run."""


SINK_HEAD_THRESHOLD = 0.3
"""A head is a sink head when its first-token share exceeds this (the runner's
``sink_heads_frac``; the line on the dashboards' plots): the epsilon of the sink metric of Gu et
al. 2024, "When Attention Sink Emerges in Language Models" (ICLR 2025). Theirs averages over
every query including the first; ours excludes query 0, as ``f_attn`` does."""

NO_VALUE = "none"
"""A tag's value where a run has no such thing (the baseline's gate position)."""

SWEEP_TAG_PREFIX = "gatelab.sweep."
"""A run belongs to sweep NAME while it has the tag ``gatelab.sweep.NAME`` = ``IN_SWEEP``."""
IN_SWEEP = "1"
LEFT_SWEEP = "stale"
"""The value a run's sweep tag gets when the sweep retrains it under a new identity."""


def sweep_tag(name: str, value: str = IN_SWEEP) -> dict[str, str]:
    """The tag that marks a run as part of sweep ``name``."""
    return {f"{SWEEP_TAG_PREFIX}{name}": value}


DESIGN_TAG_PREFIX = "gatelab.design."
"""The experiment tag ``gatelab.design.NAME`` holds, as JSON, the sequential design of
``gatelab sweep NAME --until-decided`` (``dashboards/stats/sequential.py``'s ``Design``):
fixed at the first round so that a report replays the same looks."""


def design_tag(name: str) -> str:
    return f"{DESIGN_TAG_PREFIX}{name}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs`` or ``sqlite:///rel``);
    ``None`` for other stores (and in-memory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


class Artifact(enum.StrEnum):
    """The files gatelab logs as MLflow artifacts, by name."""

    CONFIG = "config.json"
    """A training run's spec, recipe, backbone and numerics, as trained (on its first start)."""
    IDENTITY = "identity.json"
    """What a training run's hash hashes (``RunIdentity.document``)."""
    MODEL = "model.txt"
    """The built model's modules and parameter count."""
    SUMMARY = "summary.json"
    """The summary of a run that ended (``gatelab.run_summary.RunSummary``) and its status."""
    INTERNALS = "internals.npz"
    """A finished run's arrays the metrics cannot hold (``InternalsArray``)."""
    WEIGHTS = "final_weights.pt"
    """A finished run's model ``state_dict`` (``torch.save``), where its recipe has
    ``save_weights``: what a stage continues from."""
    ERROR = "error.txt"
    """The latest failure's traceback; removed when the run later finishes."""
    FAILURES = "failures.json"
    """Every failure of a run, the latest first, each ``{"at": UTC time, "cause": ...}``; kept
    when the run later finishes, as its history."""
    PLAN = "plan.json"
    """On a sweep's parent run: its latest invocation's plan."""
    REPORT = "report"
    """On a summary run: the folder of the report (HTML, Markdown, CSV, PNG)."""


class InternalsArray(enum.StrEnum):
    """The arrays of ``Artifact.INTERNALS`` (an ``.npz``), by key."""

    F_ATTN = "f_attn"
    """(layers,): each layer's first-token share, as the metric ``f_attn.layerNN``."""
    M_ACT = "m_act"
    """(layers,): each layer's largest absolute hidden-state value."""
    F_ATTN_HEADS = "f_attn_heads"
    """(layers, heads): each head's first-token share; (layers, 0) when not measured."""
    HIST_EDGES = "hist_edges"
    """(bins + 1,): the gate-score histogram's bin edges over [0, 1]."""
    GATE_HIST = "gate_hist"
    """(gated layers, bins + 2) int64: gate-score counts below 0, per bin, above 1."""
    ATTN_MAPS = "attn_maps"
    """(layers, heads, n, n) float32: the first heads' attention probabilities over the first
    positions of the first measured sequence (rows: queries); absent where none was taken."""
