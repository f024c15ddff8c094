"""The training recipe: everything about *how* a variant is trained, nothing about its shape.

Named recipes are YAML files in ``recipes/`` (``--recipe NAME``; found in the order of
``gatelab.shipped``), each naming its size preset; command-line flags override single fields.
Which fields change a run's identity is ``gatelab.runners.run.setting``'s business: the
numbers-changing ones do, cadence (``eval_every``, ``checkpoint_every``) and ``compile`` do not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import from_dict
from gatelab.runners.data.batches import WindowStart
from gatelab.runners.data.tokenizer import TokenizerKind
from gatelab.shipped import recipe_folders


@dataclass(frozen=True)
class DataRecipe:
    source: str = "wiki"
    """``wiki`` (the built-in corpus), or a path: a text file, a folder of .txt files, or a
    .parquet/.jsonl file with a text column."""
    text_column: str = "text"
    tokenizer: TokenizerKind = TokenizerKind.BPE
    """``bpe`` (byte-level BPE trained on the train split) or ``bytes``
    (256 byte ids plus end-of-text: vocabulary 257)."""
    vocab_size: int = 4096
    """BPE vocabulary size; the model's embedding takes the tokenizer's actual size."""
    window_start: WindowStart = WindowStart.RANDOM
    """Where training and validation windows start: ``random`` (any token of the joined
    stream) or ``document`` (on an end-of-text token, so position 0 of every window is the
    same token, as a BOS is, followed by the start of a document)."""


@dataclass(frozen=True)
class Recipe:
    size: str = "tiny"
    """Size preset (``registry/presets.py``)."""
    steps: int = 300
    """Optimizer steps; ``tokens`` overrides it when set."""
    tokens: int | None = None
    """Training tokens; ``None``: use ``steps``."""
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    """Peak learning rate after warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay, as a fraction of ``lr``."""
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Maximum global gradient norm; ``0`` disables clipping."""
    seed: int = 0
    eval_every: int = 100
    """Steps between validation evaluations (and metric flushes to the tracking store)."""
    eval_batches: int = 8
    """Validation batches per evaluation (fixed windows, the same every time)."""
    measure_batches: int = 2
    """Validation batches for f_attn, m_act and gate scores (explicit attention path)."""
    long_context: tuple[int, ...] = (1, 2, 4)
    """Multiples of ``seq_len`` at which the final validation loss is measured."""
    checkpoint_every: int = 100
    compile: bool = False
    """``torch.compile`` the model (no speedup on CPU; ~40 s cold start). Not part of a run's
    identity."""
    divergence_margin: float = 1.0
    """After warmup, a loss this many nats above the first step's loss counts as divergence."""
    spike_window: int = 50
    """Steps in the rolling window a loss spike is measured against."""
    spike_sigma: float = 4.0
    """A spike is a loss more than this many rolling standard deviations above the rolling
    mean (and at least ``spike_min_nats`` above it)."""
    spike_min_nats: float = 0.1
    data: DataRecipe = dataclasses.field(default_factory=DataRecipe)

    def total_steps(self) -> int:
        if self.tokens is None:
            return self.steps
        return max(1, self.tokens // (self.batch_size * self.seq_len))


def recipe_paths() -> dict[str, Path]:
    """Every recipe file by name, in the search order of ``gatelab.shipped.recipe_folders``."""
    found: dict[str, Path] = {}
    for folder in recipe_folders():
        for p in sorted(folder.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def recipe_names() -> list[str]:
    return list(recipe_paths())


def load_recipe(name: str = "tiny", overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe ``NAME.yaml`` with ``overrides`` (dotted keys) applied."""
    path = recipe_paths().get(name)
    if path is None:
        raise KeyError(f"unknown recipe preset {name!r}{closest(name, recipe_names())}; "
                       f"known: {', '.join(recipe_names())}")
    conf = OmegaConf.load(path)
    for key, value in (overrides or {}).items():
        OmegaConf.update(conf, key, value, force_add=True)
    data = OmegaConf.to_container(conf, resolve=True)
    problems: list[Problem] = []
    recipe = from_dict(Recipe, data, problems)
    problems += _check(recipe) if recipe is not None else []
    if problems or recipe is None:
        raise SpecError(str(path), problems)
    return recipe


def _check(recipe: Recipe) -> list[Problem]:
    from gatelab.registry.presets import PRESETS

    problems = []
    if recipe.size not in PRESETS:
        problems.append(Problem("size", f"{recipe.size!r} is not a size preset"
                                f"{closest(recipe.size, PRESETS)}; known: {', '.join(PRESETS)}"))
    for name in ("steps", "batch_size", "seq_len", "eval_every", "checkpoint_every"):
        if getattr(recipe, name) < 1:
            problems.append(Problem(name, f"{getattr(recipe, name)!r} must be >= 1"))
    if recipe.lr <= 0:
        problems.append(Problem("lr", f"{recipe.lr!r} must be > 0"))
    return problems
