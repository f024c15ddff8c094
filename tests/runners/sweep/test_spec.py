"""sweeps.yaml is validated before anything starts, with errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.registry.errors import SpecError
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.sweep.plan import expand, make_plan
from gatelab.runners.sweep.spec import get_sweep, load_sweeps, selected_variants


def test_the_shipped_sweeps_load_and_name_known_variants() -> None:
    sweeps = load_sweeps()
    assert {"smoke", "table1", "table4", "lr-tolerance", "lr-search", "all"} <= sweeps.keys()
    table1 = {s.id for s in selected_variants(sweeps["table1"])}
    assert {"baseline", "more-experts", "g1-elementwise", "g1-silu"} <= table1
    assert len(table1) == 15
    tolerance = sweeps["lr-tolerance"]
    assert len(tolerance.seeds) >= 3 and len(tolerance.lrs) >= 3


def test_every_run_of_every_sweep_has_a_distinct_hash() -> None:
    for name, sweep in load_sweeps().items():
        if sweep.search is not None:
            continue
        plan = make_plan(expand(sweep), {}, resolve_numerics("cpu"))
        assert len({p.run_hash for p in plan}) == len(plan), name
        assert all(p.state == "to run" for p in plan)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweeps.yaml"
    path.write_text(text)
    return path


def test_an_unknown_variant_names_the_closest_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, "s:\n  description: d\n  variants: [baseline, g1-elementwize]\n")
    with pytest.raises(SpecError) as info:
        load_sweeps(path)
    message = str(info.value)
    assert f"{path}: s.variants[1]: 'g1-elementwize' is not a known variant" in message
    assert "did you mean 'g1-elementwise'" in message


@pytest.mark.parametrize(("body", "expected"), [
    ("  description: d\n  variants: [baseline]\n  seedz: [1]\n",
     "s.seedz: unknown field (did you mean 'seeds'?)"),
    ("  description: d\n  variants: [baseline]\n  recipe: tinny\n",
     "s.recipe: 'tinny' is not a recipe (did you mean 'tiny'?)"),
    ("  description: d\n  variants: [baseline]\n  lrs: [0.01]\n  search: {trials: 2}\n",
     "s.lrs: give either an lrs grid or a search, not both"),
    ("  description: d\n  variants: [baseline]\n  lrs: [fast]\n",
     "s.lrs[0]: expected a number, got 'fast' (str)"),
    ("  description: d\n", "s.variants: name at least one variant, or a select"),
    ("  description: d\n  variants: [baseline]\n  overrides: {seed: 3}\n",
     "s.overrides.seed: set seeds in the sweep's seeds field"),
    ("  description: d\n  select: {position: G9}\n", "s.select.position: 'G9' is not allowed"),
])
def test_bad_sweep_fields_are_named(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        load_sweeps(_write(tmp_path, "s:\n" + body))
    assert expected in str(info.value)


def test_an_unknown_sweep_name_suggests_one() -> None:
    with pytest.raises(KeyError, match="did you mean 'smoke'"):
        get_sweep("smok")


def test_a_selector_picks_every_g1_variant(tmp_path: Path) -> None:
    path = _write(tmp_path, "s:\n  description: d\n  variants: [baseline]\n"
                  "  select: {position: G1}\n")
    ids = [s.id for s in selected_variants(load_sweeps(path)["s"])]
    assert ids[0] == "baseline"
    assert "g1-elementwise" in ids and "g1-headwise" in ids and "g2-elementwise" not in ids
