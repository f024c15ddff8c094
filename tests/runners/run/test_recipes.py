"""Every shipped recipe (recipes/*.yaml) loads, validates and names a size that exists."""

from __future__ import annotations

import pytest

from gatelab.model.build import resolve_backbone
from gatelab.registry.loader import load_variant
from gatelab.runners.run.recipe import load_recipe, recipe_names


def test_the_shipped_recipes_are_found() -> None:
    assert {"tiny", "sink-cpu"} <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_a_shipped_recipe_loads_and_builds_its_size(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.total_steps() > 0
    assert recipe.warmup_steps < recipe.total_steps()
    backbone = resolve_backbone(load_variant("baseline"), recipe.size)
    assert backbone.n_layers > 0 and backbone.d_model > 0


def test_the_sink_recipe_is_the_measured_candidate() -> None:
    # docs/sink-preset.md: x2's configuration, raw bytes at seq_len 512, no QK-norm.
    recipe = load_recipe("sink-cpu")
    assert (recipe.data.tokenizer, recipe.data.window_start, recipe.seq_len) == (
        "bytes", "document", 512)
    assert not resolve_backbone(load_variant("baseline"), recipe.size).qk_norm
