"""Every shipped recipe (recipes/*.yaml) loads, validates and names a size that exists; a bad
value is rejected naming where it came from (the file or an override's origin), the field, the
value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.model.build import resolve_backbone
from gatelab.registry.errors import SpecError
from gatelab.registry.loader import load_variant
from gatelab.runners.run.recipe import load_recipe, recipe_names
from gatelab.shipped import RECIPES_ENV


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


# (override, the line the error must contain): every number is finite and in its bound.
BAD_NUMBERS = [
    ({"steps": -1}, "override steps: steps: -1 is out of range: must be >= 0 and <= 1_000_000_000"),
    ({"steps": 0}, "override steps: steps: 0 trains nothing, which only a continuation can do"),
    ({"continue_from": "run-1"}, "continue_from: 'run-1' is not a run hash (16 hex digits"),
    ({"rope_base": 0}, "rope_base: 0 is out of range: must be > 0"),
    ({"yarn": {"factor": 0.5}}, "yarn.factor: 0.5 is out of range: must be >= 1 and <= 1024"),
    ({"yarn": {"alpha": 40}}, "yarn: needs alpha < beta, got alpha 40.0 and beta 32.0"),
    ({"steps": 10**10}, "steps: 10000000000 is out of range"),
    ({"tokens": 0}, "tokens: 0 is out of range: must be >= 1"),
    ({"tokens": 10**15, "batch_size": 1, "seq_len": 2},
     "tokens: 1_000_000_000_000_000 tokens make 500_000_000_000_000 steps"),
    ({"batch_size": 70_000}, "batch_size: 70000 is out of range: must be >= 1 and <= 65_536"),
    ({"seq_len": 0}, "seq_len: 0 is out of range: must be >= 2 and <= 1_048_576"),
    ({"seq_len": 1}, "seq_len: 1 is out of range: must be >= 2 and <= 1_048_576"),
    ({"lr": float("nan")}, "override lr: lr: nan is not a finite number; must be > 0 and <= 10"),
    ({"lr": 0}, "lr: 0 is out of range: must be > 0 and <= 10"),
    ({"lr": 1e6}, "lr: 1000000.0 is out of range"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio: 1.5 is out of range: must be >= 0 and <= 1"),
    ({"warmup_steps": -1}, "warmup_steps: -1 is out of range: must be >= 0"),
    ({"weight_decay": float("inf")}, "weight_decay: inf is not a finite number"),
    ({"beta1": -0.1}, "beta1: -0.1 is out of range: must be >= 0 and < 1"),
    ({"beta2": 1.0}, "beta2: 1.0 is out of range: must be >= 0 and < 1"),
    ({"grad_clip": float("inf")}, "grad_clip: inf is not a finite number; must be >= 0"),
    ({"grad_clip": -1}, "grad_clip: -1 is out of range: must be >= 0"),
    ({"seed": -1}, "seed: -1 is out of range: must be >= 0 and <= 4_294_967_295"),
    ({"eval_every": 0}, "eval_every: 0 is out of range"),
    ({"eval_batches": 0}, "eval_batches: 0 is out of range: must be >= 1"),
    ({"measure_batches": 0}, "measure_batches: 0 is out of range: must be >= 1"),
    ({"long_context": [1, 65]}, "long_context[1]: 65 is out of range: must be >= 1 and <= 64"),
    ({"long_context": []}, "long_context: needs at least one multiple of seq_len"),
    ({"checkpoint_every": 0}, "checkpoint_every: 0 is out of range"),
    ({"divergence_margin": 0}, "divergence_margin: 0 is out of range: must be > 0"),
    ({"spike_window": 0}, "spike_window: 0 is out of range: must be >= 1"),
    ({"spike_sigma": float("-inf")}, "spike_sigma: -inf is not a finite number; must be > 0"),
    ({"spike_min_nats": 0}, "spike_min_nats: 0 is out of range: must be > 0"),
    ({"data.vocab_size": 100}, "data.vocab_size: 100 is out of range: must be >= 258"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_NUMBERS,
                         ids=[",".join(o) for o, _ in BAD_NUMBERS])
def test_a_bad_number_is_rejected_naming_field_value_and_bound(
        overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_recipe("tiny", overrides)
    assert expected in str(info.value)


@pytest.fixture
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipes folder searched first (``$GATELAB_RECIPES``)."""
    monkeypatch.setenv(RECIPES_ENV, str(tmp_path))
    return tmp_path


def test_a_non_finite_number_in_a_recipe_file_names_the_file(recipes: Path) -> None:
    path = recipes / "mine.yaml"
    path.write_text("size: tiny\nlr: .nan\nbeta2: .inf\n")
    with pytest.raises(SpecError) as info:
        load_recipe("mine")
    assert str(info.value).splitlines() == [
        f"{path}: lr: nan is not a finite number; must be > 0 and <= 10",
        f"{path}: beta2: inf is not a finite number; must be >= 0 and < 1"]


def test_an_override_problem_is_blamed_on_its_origin_and_the_file_keeps_its_own(
        recipes: Path) -> None:
    path = recipes / "mine.yaml"
    path.write_text("size: tiny\nweight_decay: -1\n")
    overrides = {"lr": "fast", "data.tokenizer": "words", "stepz": 3,
                 "data": {"window_start": "middle"}}
    origins = {"lr": "--lr", "data.tokenizer": "--set data.tokenizer=words",
               "stepz": "--set stepz=3", "data": "sweeps.yaml: s.overrides.data"}
    with pytest.raises(SpecError) as info:
        load_recipe("mine", overrides, origins)
    lines = str(info.value).splitlines()
    assert "--lr: lr: expected a number, got 'fast' (str)" in lines
    assert f"{path}: weight_decay: -1 is out of range: must be >= 0 and <= 10" in lines
    assert ("--set data.tokenizer=words: data.tokenizer: 'words' is not allowed; allowed: "
            "bpe, bytes") in lines
    assert any(line.startswith("--set stepz=3: stepz: unknown field (did you mean 'steps'?)")
               for line in lines), lines
    assert any(line.startswith("sweeps.yaml: s.overrides.data: data.window_start: 'middle'")
               for line in lines), lines
    assert len(lines) == 5


def test_an_override_without_an_origin_is_named_as_an_override() -> None:
    with pytest.raises(SpecError) as info:
        load_recipe("tiny", {"lr.x": 3, "a..b": 1})
    assert str(info.value).splitlines() == [
        "override a..b: a..b: 'a..b' is not a field name (a dotted name such as steps or "
        "data.tokenizer)",
        "override lr.x: lr: expected a number, got {'x': 3} (dict)"]


def test_interpolation_is_rejected_in_a_recipe_and_in_an_override(
        recipes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATELAB_TEST_SECRET", "0.004")
    path = recipes / "mine.yaml"
    path.write_text("size: tiny\nlr: ${oc.env:GATELAB_TEST_SECRET}\n"
                    "data: {source: '${oc.env:HOME}/corpus.txt'}\n")
    with pytest.raises(SpecError) as info:
        load_recipe("mine")
    message = str(info.value)
    assert message.splitlines()[0] == (
        f"{path}: lr: '${{oc.env:GATELAB_TEST_SECRET}}' is not allowed: configuration files "
        "are plain data (no ${...} interpolation or resolvers); write the value itself")
    assert f"{path}: data.source: '${{oc.env:HOME}}/corpus.txt' is not allowed" in message
    assert "0.004" not in message
    with pytest.raises(SpecError) as info:
        load_recipe("tiny", {"lr": "${oc.env:GATELAB_TEST_SECRET}"},
                    {"lr": "--set lr=${oc.env:GATELAB_TEST_SECRET}"})
    assert str(info.value).startswith("--set lr=${oc.env:GATELAB_TEST_SECRET}: lr: "
                                      "'${oc.env:GATELAB_TEST_SECRET}' is not allowed: "
                                      "configuration files are plain data")


def test_a_merged_mapping_override_is_blamed_only_for_what_it_writes(recipes: Path) -> None:
    path = recipes / "mine.yaml"
    path.write_text("size: tiny\ndata: {vocab_size: 5}\n")
    with pytest.raises(SpecError) as info:
        load_recipe("mine", {"data": {"tokenizer": "words"}}, {"data": "--set data=..."})
    assert str(info.value).splitlines() == [
        "--set data=...: data.tokenizer: 'words' is not allowed; allowed: bpe, bytes",
        f"{path}: data.vocab_size: 5 is out of range: must be >= 258 and <= 1_048_576"]
