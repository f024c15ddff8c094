"""The training recipe: everything about *how* a variant is trained, nothing about its shape.

Named recipes are YAML files in ``recipes/`` (``--recipe NAME``; found in the order of
``gatelab.shipped``), each naming its size preset; command-line flags and a sweep's overrides
change single fields. Every field is declared hashed (part of a run's identity) or not, in
``HASHED_FIELDS`` and ``NOT_HASHED_FIELDS`` below (``gatelab.runners.run.setting`` hashes
them): the numbers-changing ones are, cadence (``eval_every``, ``checkpoint_every``),
``compile``, ``micro_batch_size`` and ``save_weights`` are not.

A recipe may continue from a finished run (``continue_from``: its hash) instead of starting
from scratch: a *stage* such as Table 5's context extension (a longer ``seq_len`` and another
``rope_base``) or an evaluation under YaRN scaling (``yarn``, with ``steps: 0``). The parent
must have logged its final weights (``save_weights``); a sweep's ``stages`` set that for every
run a later stage continues from.

Every number is checked where it is read: it must be finite and lie in its field's bound,
declared once with ``bounded`` next to the field and stated in its docstring ("Allowed: ...").
A problem is blamed on where its value came from: the recipe file, or the origin of an override
(``--lr``, ``--set data.tokenizer=words``, ``sweeps.yaml: smoke.overrides.steps``).

Recipes are plain data: interpolation (``${...}``, resolvers such as ``${oc.env:NAME}``) is
rejected, in the file and in override values alike, before anything is resolved
(``gatelab.registry.loader``), so no environment value or secret reaches a logged recipe.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gatelab.registry.backbone import YarnScaling
from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import Bound, bounded, from_dict
from gatelab.registry.loader import PLAIN_DATA, interpolations, read_config
from gatelab.registry.schema import to_plain
from gatelab.runners.data.batches import WindowStart
from gatelab.runners.data.tokenizer import MIN_BPE_VOCAB, TokenizerKind
from gatelab.shipped import recipe_folders

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RUN_HASH = re.compile(r"^[0-9a-f]{16}$")

MAX_STEPS = 1_000_000_000
"""The most optimizer steps a recipe may ask for, directly or through ``tokens``."""
LR_BOUND = Bound(gt=0, le=10)
"""A peak learning rate: the recipe's ``lr``, a sweep's grid and its search range."""
SEED_BOUND = Bound(ge=0, le=4_294_967_295)
"""A seed: the recipe's ``seed`` and a sweep's seeds (every RNG takes 32 bits)."""


class EvalSchedule(enum.StrEnum):
    """When a run evaluates (validation loss and the paper's measurements)."""

    EVERY = "every"
    LOG = "log"


@dataclass(frozen=True)
class DataRecipe:
    source: str = "wiki"
    """``wiki`` (the built-in corpus), or a path: a text file, a folder of .txt files, or a
    .parquet/.jsonl file with a text column."""
    text_column: str = "text"
    tokenizer: TokenizerKind = TokenizerKind.BPE
    """``bpe`` (byte-level BPE trained on the train split) or ``bytes``
    (256 byte ids plus end-of-text: vocabulary 257)."""
    vocab_size: int = bounded(4096, Bound(ge=MIN_BPE_VOCAB, le=1_048_576))
    """BPE vocabulary size; the model's embedding takes the tokenizer's actual size.
    Allowed: >= 258 and <= 1_048_576."""
    window_start: WindowStart = WindowStart.RANDOM
    """Where training and validation windows start: ``random`` (any token of the joined
    stream) or ``document`` (on an end-of-text token, so position 0 of every window is the
    same token, as a BOS is, followed by the start of a document)."""


@dataclass(frozen=True)
class Recipe:
    size: str = "tiny"
    """Size preset (``registry/presets.py``)."""
    steps: int = bounded(300, Bound(ge=0, le=MAX_STEPS))
    """Optimizer steps; ``tokens`` overrides it when set. ``0`` trains nothing: a continuation
    (``continue_from``) that only evaluates its parent's weights. Allowed: >= 0 and
    <= 1_000_000_000."""
    tokens: int | None = bounded(None, Bound(ge=1, le=1_000_000_000_000_000))
    """Training tokens; ``None``: use ``steps``. Allowed: >= 1 and
    <= 1_000_000_000_000_000, and at most 1_000_000_000 steps of ``batch_size * seq_len``."""
    batch_size: int = bounded(16, Bound(ge=1, le=65_536))
    """Sequences per optimizer step. Allowed: >= 1 and <= 65_536."""
    seq_len: int = bounded(128, Bound(ge=2, le=1_048_576))
    """Tokens per training sequence; at least 2, since the paper's measurements compare a
    token's attention to the first token with the rest (at 1 there is no rest: ``f_attn`` is
    nan). Allowed: >= 2 and <= 1_048_576."""
    lr: float = bounded(3e-3, LR_BOUND)
    """Peak learning rate after warmup. Allowed: > 0 and <= 10."""
    min_lr_ratio: float = bounded(0.1, Bound(ge=0, le=1))
    """Final learning rate of the cosine decay, as a fraction of ``lr``.
    Allowed: >= 0 and <= 1."""
    warmup_steps: int = bounded(30, Bound(ge=0, le=MAX_STEPS))
    """Steps of linear warmup (may exceed the run's steps: then it never reaches ``lr``).
    Allowed: >= 0 and <= 1_000_000_000."""
    weight_decay: float = bounded(0.1, Bound(ge=0, le=10))
    """AdamW's decoupled weight decay. Allowed: >= 0 and <= 10."""
    beta1: float = bounded(0.9, Bound(ge=0, lt=1))
    """AdamW's first-moment decay. Allowed: >= 0 and < 1."""
    beta2: float = bounded(0.95, Bound(ge=0, lt=1))
    """AdamW's second-moment decay. Allowed: >= 0 and < 1."""
    grad_clip: float = bounded(1.0, Bound(ge=0))
    """Maximum global gradient norm; ``0`` disables clipping. Allowed: >= 0 (finite)."""
    seed: int = bounded(0, SEED_BOUND)
    """Seed of the model's initialisation and the batch order. Allowed: >= 0 and
    <= 4_294_967_295."""
    eval_every: int = bounded(100, Bound(ge=1, le=MAX_STEPS))
    """Steps between validation evaluations (each flushes the metrics to the tracking store)
    with ``eval_schedule: every``. Allowed: >= 1 and <= 1_000_000_000."""
    eval_schedule: EvalSchedule = EvalSchedule.EVERY
    """``every``: an evaluation each ``eval_every`` steps; ``log``: about ``eval_points``
    evaluations at log-spaced steps (dense early, where a sink forms or not), the way the
    ``sink-onset`` sweep watches one long run. Cadence: not part of a run's identity."""
    eval_points: int = bounded(24, Bound(ge=2, le=10_000))
    """With ``eval_schedule: log``: how many log-spaced evaluations (fewer where steps
    coincide). Allowed: >= 2 and <= 10_000."""
    eval_batches: int = bounded(8, Bound(ge=1, le=1_000_000))
    """Validation batches per evaluation (fixed windows, the same every time).
    Allowed: >= 1 and <= 1_000_000."""
    measure_batches: int = bounded(2, Bound(ge=1, le=1_000_000))
    """Validation batches for f_attn, m_act and gate scores (explicit attention path).
    Allowed: >= 1 and <= 1_000_000."""
    measure_batch_size: int | None = bounded(None, Bound(ge=1, le=65_536))
    """Sequences per measurement batch: a small fixed batch keeps the explicit attention
    path's memory bounded at large training batches; ``None``: ``batch_size``.
    Allowed: >= 1 and <= 65_536."""
    long_context: tuple[int, ...] = bounded((1, 2, 4), Bound(ge=1, le=64))
    """Multiples of ``seq_len`` at which the final validation loss is measured; at least one,
    the first is the reported validation loss. Allowed: each >= 1 and <= 64."""
    checkpoint_every: int = bounded(100, Bound(ge=1, le=MAX_STEPS))
    """Steps between checkpoints. Allowed: >= 1 and <= 1_000_000_000."""
    compile: bool | None = None
    """``torch.compile`` the training step; ``None``: on CUDA, off on CPU (where it gives no
    speedup and costs ~40 s cold). Not part of a run's identity."""
    micro_batch_size: int | None = bounded(None, Bound(ge=1, le=65_536))
    """Sequences per forward/backward pass: the batch is split into micro-batches whose
    gradients are accumulated, so a token batch fits any memory; ``None``: the whole batch at
    once, except on a CPU, where micro-batches of at most ``loss.CPU_MICRO_BATCH_LOGITS``
    logits keep the LM head in cache (``loss.micro_batch_for``). Not part of a run's identity
    (the update is the same up to float rounding). Allowed: >= 1 and <= 65_536."""
    divergence_margin: float = bounded(1.0, Bound(gt=0))
    """After warmup, a loss this many nats above the first step's loss counts as divergence.
    Allowed: > 0 (finite)."""
    spike_window: int = bounded(50, Bound(ge=1, le=1_000_000))
    """Steps in the rolling window a loss spike is measured against.
    Allowed: >= 1 and <= 1_000_000."""
    spike_sigma: float = bounded(4.0, Bound(gt=0))
    """A spike is a loss more than this many rolling standard deviations above the rolling
    mean (and at least ``spike_min_nats`` above it). Allowed: > 0 (finite)."""
    spike_min_nats: float = bounded(0.1, Bound(gt=0))
    """The least excess over the rolling mean, in nats, that counts as a spike.
    Allowed: > 0 (finite)."""
    data: DataRecipe = dataclasses.field(default_factory=DataRecipe)
    continue_from: str | None = None
    """The hash of a finished run whose final weights this run starts from (a stage: its own
    run, linked to the parent by the ``gatelab.parent_hash`` tag); the parent must have been
    trained with ``save_weights``. The optimizer and the LR schedule start afresh. ``None``:
    from a fresh initialisation."""
    rope_base: float | None = bounded(None, Bound(gt=0, le=10**15))
    """RoPE's base in place of the size preset's (Table 5 raises it, 10k -> 1M, with the
    context); ``None``: the preset's. Allowed: > 0 and <= 1_000_000_000_000_000."""
    yarn: YarnScaling | None = None
    """YaRN scaling of RoPE (``factor``, ``original_len``; ``gatelab.model.rope``), in training
    and evaluation alike; with ``steps: 0`` and ``continue_from``, an evaluation of the parent's
    weights at a longer context without training. ``None``: plain RoPE."""
    save_weights: bool = False
    """Log the final model weights as the MLflow artifact ``final_weights.pt``, so a stage on any
    machine can continue from this run. Not part of a run's identity."""
    position_buckets: int = bounded(0, Bound(ge=0, le=4096))
    """The final long-context evaluation also records its loss in this many equal slices of
    the evaluated length (``val_loss_ctx{m}x.pos{b}``: positions ``[b*T/n, (b+1)*T/n)``, the
    mean over those targets); ``0``: none. Allowed: >= 0 and <= 4096."""

    def total_steps(self) -> int:
        if self.tokens is None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))


HASHED_FIELDS = frozenset({
    "size", "steps", "tokens", "batch_size", "seq_len", "lr", "min_lr_ratio", "warmup_steps",
    "weight_decay", "beta1", "beta2", "grad_clip", "seed", "eval_batches", "measure_batches",
    "measure_batch_size", "long_context", "divergence_margin", "spike_window", "spike_sigma",
    "spike_min_nats", "data", "continue_from", "rope_base", "yarn", "position_buckets",
})
"""The ``Recipe`` fields that change a run's numbers, so its identity: each by its content
(``size``, ``rope_base`` and ``yarn`` as the backbone they give, ``tokens`` as the step count,
``data`` as the corpus's content hash and the tokenizer, the seed apart). Every field is in
exactly one of this set and ``NOT_HASHED_FIELDS`` (a test checks it, so a new field must be
given one)."""

NOT_HASHED_FIELDS = frozenset({
    "eval_every", "eval_schedule", "eval_points", "checkpoint_every", "compile",
    "micro_batch_size", "save_weights",
})
"""The ``Recipe`` fields that leave a run's numbers as they are: when it evaluates and
checkpoints, ``torch.compile``, how a batch is split for memory (the same update up to float
rounding) and whether its final weights are logged."""


def recipe_paths() -> dict[str, Path]:
    """Every recipe file by name, in the search order of ``gatelab.shipped.recipe_folders``."""
    found: dict[str, Path] = {}
    for folder in recipe_folders():
        for p in sorted(folder.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def recipe_names() -> list[str]:
    return list(recipe_paths())


def load_recipe(name: str = "tiny", overrides: Mapping[str, Any] | None = None,
                origins: Mapping[str, str] | None = None) -> Recipe:
    """The recipe ``NAME.yaml`` with ``overrides`` (dotted keys: ``data.tokenizer``) applied
    in order. ``SpecError`` lists every problem: one in an overridden field (or under it) is
    blamed on the override's origin, ``origins[key]`` (such as ``--lr`` or
    ``sweeps.yaml: smoke.overrides.steps``; default ``override KEY``), as is an unknown key;
    one in the file's own values is blamed on the file."""
    path = recipe_paths().get(name)
    if path is None:
        raise KeyError(f"unknown recipe preset {name!r}{closest(name, recipe_names())}; "
                       f"known: {', '.join(recipe_names())}")
    return _with_overrides(read_config(path), str(path), overrides, origins)


def derive_recipe(recipe: Recipe, overrides: Mapping[str, Any],
                  origins: Mapping[str, str] | None = None, source: str = "the parent recipe"
                  ) -> Recipe:
    """``recipe`` with ``overrides`` applied and checked as ``load_recipe`` does (a stage's
    recipe from its parent's); a problem in the recipe's own values is blamed on ``source``."""
    plain = to_plain(recipe)
    assert isinstance(plain, dict)
    conf = OmegaConf.create(plain)
    return _with_overrides(conf, source, overrides, origins)


def _with_overrides(conf: Any, source: str, overrides: Mapping[str, Any] | None,
                    origins: Mapping[str, str] | None) -> Recipe:
    problems: list[Problem] = []
    blame: dict[str, str] = {}
    for key, value in (overrides or {}).items():
        origin = (origins or {}).get(key, f"override {key}")
        if not _DOTTED.match(key):
            problems.append(Problem(key or "<key>", f"{key!r} is not a field name (a dotted "
                                    "name such as steps or data.tokenizer)", origin))
            continue
        blame.update(dict.fromkeys(_written(key, value), origin))
        try:
            OmegaConf.update(conf, key, value, force_add=True)
        except OmegaConfBaseException as err:
            reason = str(err).splitlines()[0]
            malformed_interpolation = isinstance(value, str) and "${" in value
            problems.append(Problem(key, f"{value!r} {PLAIN_DATA}" if malformed_interpolation
                                    else f"{value!r} cannot be set: {reason}"))
    interpolated = interpolations(conf)
    problems += interpolated
    recipe = None
    if not interpolated:  # only plain data is read
        recipe = from_dict(Recipe, OmegaConf.to_container(conf, resolve=False), problems)
        problems += _check(recipe) if recipe is not None else []
    if problems or recipe is None:
        raise SpecError(source, [_blamed(p, blame) for p in problems])
    return recipe


def _written(key: str, value: object) -> list[str]:
    """The dotted fields an override writes: ``key``, or each leaf of a mapping it merges
    (``data: {tokenizer: bytes}`` writes ``data.tokenizer`` only)."""
    if isinstance(value, Mapping) and value:
        return [f for k, v in value.items() for f in _written(f"{key}.{k}", v)]
    return [key]


def _blamed(problem: Problem, blame: Mapping[str, str]) -> Problem:
    """``problem`` with its source set to the origin of the override that wrote its field: the
    longest written field that is the problem's field, a parent of it (``long_context`` for
    ``long_context[1]``) or under it (``lr.x`` turned ``lr`` into a mapping); unchanged
    otherwise (the file's own value)."""
    field = problem.field
    keys = [k for k in blame if field == k or field.startswith((f"{k}.", f"{k}["))
            or k.startswith(f"{field}.")]
    if not keys:
        return problem
    return dataclasses.replace(problem, source=blame[max(keys, key=len)])


def _check(recipe: Recipe) -> list[Problem]:
    """The rules between fields (each field's own range is checked as it is read)."""
    from gatelab.registry.presets import PRESETS

    problems = []
    if recipe.size not in PRESETS:
        problems.append(Problem("size", f"{recipe.size!r} is not a size preset"
                                f"{closest(recipe.size, PRESETS)}; known: {', '.join(PRESETS)}"))
    if not recipe.long_context:
        problems.append(Problem("long_context", "needs at least one multiple of seq_len "
                                "(the first is the reported validation loss), e.g. [1]"))
    if recipe.tokens is not None and recipe.total_steps() > MAX_STEPS:
        problems.append(Problem("tokens", f"{recipe.tokens:_} tokens make "
                                f"{recipe.total_steps():_} steps of {recipe.batch_size} x "
                                f"{recipe.seq_len} tokens; at most {MAX_STEPS:_} steps allowed"))
    if recipe.continue_from is not None and not _RUN_HASH.match(recipe.continue_from):
        problems.append(Problem("continue_from", f"{recipe.continue_from!r} is not a run hash "
                                "(16 hex digits, as gatelab sweep NAME --dry-run lists them)"))
    if recipe.total_steps() == 0 and recipe.continue_from is None:
        problems.append(Problem("steps", "0 trains nothing, which only a continuation can do "
                                "(set continue_from to a finished run's hash); else >= 1"))
    if recipe.yarn is not None and not recipe.yarn.alpha < recipe.yarn.beta:
        problems.append(Problem("yarn", f"needs alpha < beta, got alpha {recipe.yarn.alpha!r} "
                                f"and beta {recipe.yarn.beta!r}"))
    return problems
