"""A run resolved: the spec, the recipe, the backbone it builds, the data and the numerics it
uses, and the identity (``gatelab.identity``) of all that.

``resolve_setting`` hashes a run's parts: every backbone field after capacity and parameter
matching (not the size preset's name); every field of the spec's ``Architecture`` but those the
backbone absorbs (``registry.schema.ABSORBED_BY_BACKBONE``), taken from the schema's own field
list, not the spec's id; the recipe's ``HASHED_FIELDS`` (``runners.run.recipe``: the training
fields that change the numbers, not its ``NOT_HASHED_FIELDS`` such as ``eval_every``,
``checkpoint_every``, ``compile``), the corpus's *content* hash and the tokenizer (not the
path), and the numerics. Fields added since identity version 2 are hashed only where they
differ from their old-equivalent value (``ADDED_FIELDS``). A stage (a recipe with
``continue_from``) hashes its parent's hash with the fields it changes: a RoPE base or YaRN
scaling as part of the backbone it builds, a sequence length or step count as training fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from gatelab.identity import Lineage, RunIdentity, run_identity
from gatelab.model.build import resolve_backbone
from gatelab.registry.backbone import Backbone
from gatelab.registry.resolve import size_backbone
from gatelab.registry.schema import (
    ABSORBED_BY_BACKBONE,
    Architecture,
    VariantSpec,
    architecture_dict,
    to_plain,
)
from gatelab.runners.data.corpus import Source, locate_source
from gatelab.runners.data.tokens import DataConfig
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.recipe import HASHED_FIELDS, NOT_HASHED_FIELDS, Recipe

ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "architecture": {
        "normaliser": {"kind": "softmax", "gamma": None, "zeta": None},
        "sink_tokens": 0,
        "switch_head": None,
    },
    "backbone": {"yarn": None},
    "training": {"continue_from": None, "position_buckets": 0},
    "numerics": {"tf32": False},
}
"""Fields added to a part (spec, backbone, training, numerics) after identity version 2, each
with the value that reproduces what runs recorded before it computed: such a field is hashed
only where a run's value differs from it, so growing the schema keeps the identity of every
recorded run (``tests/runners/run/test_identity_stable.py`` pins some). A new field of
``Architecture`` is hashed from the moment it exists: it goes here (or, if it only changes the
backbone, into ``ABSORBED_BY_BACKBONE``), else it moves every recorded run's hash."""


def _hashed(part: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the added fields of ``part`` that hold their old-equivalent value."""
    added = ADDED_FIELDS[part]
    return {k: v for k, v in fields.items() if k not in added or v != added[k]}


@dataclass(frozen=True)
class RunSetting:
    spec: VariantSpec
    recipe: Recipe
    backbone: Backbone
    """Resolved at the recipe's size; its ``vocab_size`` is the size preset's until the data
    sets the tokenizer's (``train``)."""
    source: Source
    numerics: Numerics
    identity: RunIdentity
    size: str | Backbone
    """What the model is built at (``build_model``'s ``size``): the size preset's name, or its
    backbone with the recipe's RoPE base and YaRN scaling."""

    @property
    def run_hash(self) -> str:
        return self.identity.run_hash

    def data_config(self, cache_dir: Path) -> DataConfig:
        d = self.recipe.data
        return DataConfig(source=d.source, text_column=d.text_column, tokenizer=d.tokenizer,
                          vocab_size=d.vocab_size, cache_dir=str(cache_dir))


def architecture_fields(arch: Architecture, backbone: Backbone) -> dict[str, Any]:
    """What a run's identity holds of the model it builds: the resolved ``backbone`` (but its
    vocabulary) and every field of ``arch`` that the backbone does not absorb, each added
    field only where it differs from its old-equivalent value."""
    plain = architecture_dict(arch)
    own = {k: v for k, v in plain.items() if k not in ABSORBED_BY_BACKBONE}
    return {"backbone": _without_vocab(backbone), **_hashed("architecture", own)}


def recipe_identity_gaps(recipe_type: type[Recipe] = Recipe) -> list[str]:
    """One line per field of ``recipe_type`` whose identity is undecided: in neither or both of
    ``HASHED_FIELDS`` and ``NOT_HASHED_FIELDS``; and per name in them that is no field.
    Empty when every field is decided."""
    fields = [f.name for f in dataclasses.fields(recipe_type)]
    gaps = [f"{recipe_type.__name__}.{name}: in neither HASHED_FIELDS nor NOT_HASHED_FIELDS "
            "(runners/run/recipe.py); put it in the one that says whether it changes a run's "
            "numbers" for name in fields
            if name not in HASHED_FIELDS and name not in NOT_HASHED_FIELDS]
    gaps += [f"{recipe_type.__name__}.{name}: in both HASHED_FIELDS and NOT_HASHED_FIELDS; "
             "keep it in one" for name in sorted(HASHED_FIELDS & NOT_HASHED_FIELDS)]
    gaps += [f"{name}: named in runners/run/recipe.py's identity sets but not a field of "
             f"{recipe_type.__name__}; remove it"
             for name in sorted((HASHED_FIELDS | NOT_HASHED_FIELDS) - set(fields))]
    return gaps


def training_fields(recipe: Recipe) -> dict[str, Any]:
    """Where the identity document holds the recipe's ``HASHED_FIELDS`` that are training
    fields (the seed is hashed apart; ``size``, ``rope_base`` and ``yarn`` as the backbone;
    ``data`` as the data part), laid out as identity version 2 laid them out."""
    r = recipe
    return {
        "steps": r.total_steps(), "batch_size": r.batch_size, "seq_len": r.seq_len,
        "lr": r.lr, "min_lr_ratio": r.min_lr_ratio, "warmup_steps": r.warmup_steps,
        "optimizer": {"name": "adamw", "weight_decay": r.weight_decay, "beta1": r.beta1,
                      "beta2": r.beta2, "grad_clip": r.grad_clip},
        "divergence_margin": r.divergence_margin,
        "spikes": {"window": r.spike_window, "sigma": r.spike_sigma,
                   "min_nats": r.spike_min_nats},
        "measurement": {"eval_batches": r.eval_batches, "measure_batches": r.measure_batches,
                        "long_context": list(r.long_context),
                        # Hashed where set: unset, the training batch size (hashed above)
                        # is the measurement's, as it was before the field existed.
                        **({"batch_size": r.measure_batch_size}
                           if r.measure_batch_size is not None else {})},
        "continue_from": r.continue_from, "position_buckets": r.position_buckets,
    }


def resolve_setting(spec: VariantSpec, recipe: Recipe, numerics: Numerics,
                    size: str | Backbone | None = None, parent: Lineage | None = None
                    ) -> RunSetting:
    """Everything a run is, and its identity. ``size`` replaces the recipe's size preset (a
    name or a backbone of one's own, as the sink probe uses). ``parent``: the hashes of the
    run a stage continues from (``recipe.continue_from``), which a stage needs and only a
    stage takes (the plan knows them; a run reads them from the parent's tags)."""
    if (parent.run_hash if parent else None) != recipe.continue_from:
        raise ValueError(f"the recipe continues from {recipe.continue_from}, but the parent "
                         f"given is {parent.run_hash if parent else None}")
    size = with_rope(recipe, recipe.size if size is None else size)
    backbone = resolve_backbone(spec, size)
    source = _located(recipe.data.source, recipe.data.text_column)
    config = DataConfig(tokenizer=recipe.data.tokenizer, vocab_size=recipe.data.vocab_size)
    identity = run_identity(
        architecture=architecture_fields(spec.architecture, backbone),
        size=_without_vocab(size_backbone(size)),
        training=_hashed("training", training_fields(recipe)),
        data={"corpus": source.key, "tokenizer": config.tokenizer_key,
              "window_start": recipe.data.window_start.value},
        numerics=_hashed("numerics", numerics.as_dict()), seed=recipe.seed, parent=parent)
    return RunSetting(spec, recipe, backbone, source, numerics, identity, size)


def with_rope(recipe: Recipe, size: str | Backbone) -> str | Backbone:
    """``size``, or its backbone with the recipe's RoPE base and YaRN scaling where it sets
    them (``rope_base`` and ``yarn`` are backbone fields: hashed as the backbone)."""
    if recipe.rope_base is None and recipe.yarn is None:
        return size
    backbone = size_backbone(size)
    return dataclasses.replace(
        backbone, rope_base=backbone.rope_base if recipe.rope_base is None else recipe.rope_base,
        yarn=recipe.yarn or backbone.yarn)


def _without_vocab(backbone: Backbone) -> dict[str, Any]:
    """A backbone's fields but its vocabulary size, which the tokenizer decides (data part)."""
    fields = to_plain(backbone)
    assert isinstance(fields, dict)
    return _hashed("backbone", {k: v for k, v in fields.items() if k != "vocab_size"})


def _located(source: str, text_column: str) -> Source:
    """``locate_source``, hashed once per process while a file is unchanged (a folder is
    hashed every time: its own time stamp does not follow its files' contents)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return locate_source(source, text_column)
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None
    return _located_at(source, text_column, stamp)


@cache
def _located_at(source: str, text_column: str, stamp: tuple[int, int] | None) -> Source:
    return locate_source(source, text_column)
