"""Recorded runs keep their identity while the schema grows.

The run hashes below were computed at identity version 2 from the shipped specs, the ``tiny``
recipe, the built-in corpus and CPU numerics; the runs of the committed findings
(``docs/findings/``) carry them. A change that moves one of them makes every recorded run
``stale``: either the change alters what a run computes (then bump ``IDENTITY_VERSION`` and
say so in README), or a field was added without its old-equivalent value in
``runners/run/setting.py``'s ``ADDED_FIELDS``.
"""

from __future__ import annotations

import dataclasses

import pytest

from gatelab.identity import IDENTITY_VERSION
from gatelab.registry.loader import load_variant
from gatelab.registry.schema import Architecture
from gatelab.runners.run import setting as setting_module
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.setting import ADDED_FIELDS, resolve_setting

PINNED = {
    "baseline": ("tiny", "92f061875359650c"),
    "g1-additive-silu": ("tiny", "a006e39b7d7c72ce"),
    "g1-elementwise": ("tiny", "1cc0f22ecd5ea13d"),
    "g1-elementwise-matched": ("tiny", "cf2a4fd001454de4"),
    "g1-head-shared": ("tiny", "c1014f9177e75765"),
    "g1-headwise": ("tiny", "12ceecd032709b12"),
    "g1-input-independent": ("tiny", "7d64dc22a47d100b"),
    "g1-ns-sigmoid": ("tiny", "32d966348c049ba7"),
    "g1-silu": ("tiny", "21cc9603e4519052"),
    "g2-elementwise": ("tiny", "4156507e919e8048"),
    "g2-headwise": ("tiny", "274315787068c51d"),
    "g5-elementwise": ("tiny", "9d2e6d947d8ce603"),
    "more-experts": ("tiny-moe", "0ed827dab6792aaf"),
    "more-q-heads": ("tiny", "29fb9fa2e3feb147"),
    "sandwich-norm": ("tiny", "c96ac8b0b9e68b52"),
    "sdpa-group-rmsnorm": ("tiny", "5c19442909ee5494"),
    "sdpa-scale": ("tiny", "647e9335e0e4eda6"),
    "sdpa-silu": ("tiny", "4eacf54cee27957f"),
}


@pytest.mark.parametrize("variant", sorted(PINNED))
def test_a_recorded_run_keeps_its_hash(variant: str) -> None:
    size, pinned = PINNED[variant]
    setting = resolve_setting(load_variant(variant), load_recipe("tiny", {"size": size}),
                              resolve_numerics("cpu"))
    assert IDENTITY_VERSION == 2
    assert setting.run_hash == pinned, (
        f"{variant}'s run hash moved: recorded runs would all read stale (see this module's "
        "docstring)")


def test_an_added_field_at_its_old_value_is_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new training field listed in ``ADDED_FIELDS`` leaves the hash alone at its
    old-equivalent value and changes it at any other."""
    recipe, spec, cpu = load_recipe("tiny"), load_variant("baseline"), resolve_numerics("cpu")
    before = resolve_setting(spec, recipe, cpu).run_hash
    old_fields = setting_module.training_fields
    monkeypatch.setitem(ADDED_FIELDS, "training", {**ADDED_FIELDS["training"], "new_knob": 1})
    for value, same in ((1, True), (2, False)):
        monkeypatch.setattr(setting_module, "training_fields",
                            lambda r, v=value: {**old_fields(r), "new_knob": v})
        assert (resolve_setting(spec, recipe, cpu).run_hash == before) is same, value


def test_an_architecture_field_added_undecided_moves_every_recorded_hash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The architecture part of the identity comes from the schema's field list, so a new
    field is hashed the day it exists: at its default it moves every recorded run's hash (the
    pinned test above fails) until ``ADDED_FIELDS`` holds its old-equivalent value, after which
    only a run that sets it gets a new hash."""

    @dataclasses.dataclass(frozen=True)
    class Grown(Architecture):
        new_knob: int = 0

    spec, recipe, cpu = load_variant("baseline"), load_recipe("tiny"), resolve_numerics("cpu")
    plain = {f.name: getattr(spec.architecture, f.name)
             for f in dataclasses.fields(Architecture)}

    def run_hash(knob: int) -> str:
        grown = dataclasses.replace(spec, architecture=Grown(**plain, new_knob=knob))
        return resolve_setting(grown, recipe, cpu).run_hash

    pinned = PINNED["baseline"][1]
    assert resolve_setting(spec, recipe, cpu).run_hash == pinned
    assert run_hash(0) != pinned  # undecided: every recorded run would read stale
    monkeypatch.setitem(ADDED_FIELDS, "architecture",
                        {**ADDED_FIELDS["architecture"], "new_knob": 0})
    assert run_hash(0) == pinned and run_hash(1) != pinned
