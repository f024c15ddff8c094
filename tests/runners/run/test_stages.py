"""A stage (a run that continues from another's final weights): its own identity built from its
parent's hash and the fields it changes, and a clear error where the parent cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.contract import RunStatus, Tag
from gatelab.identity import Lineage
from gatelab.model.build import build_model
from gatelab.registry.loader import load_variant
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import derive_recipe, load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import RunSetting, resolve_setting
from gatelab.runners.run.stages import ParentError, find_parent, parent_weights
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.run.train import train

CPU = resolve_numerics("cpu")
EXTEND = {"seq_len": 256, "rope_base": 1e6, "steps": 50}
YARN = {"steps": 0, "yarn": {"factor": 8, "original_len": 256}}


def lineage(setting: RunSetting) -> Lineage:
    ident = setting.identity
    return Lineage(ident.run_hash, ident.setting_hash, ident.lr_setting_hash)


def staged(parent: RunSetting, overrides: dict[str, object]) -> RunSetting:
    recipe = derive_recipe(parent.recipe, {**overrides, "continue_from": parent.run_hash})
    return resolve_setting(parent.spec, recipe, CPU, parent=lineage(parent))


def base(variant: str = "baseline", seed: int = 0) -> RunSetting:
    return resolve_setting(load_variant(variant), load_recipe("tiny", {"seed": seed}), CPU)


def test_a_stage_has_its_own_identity_holding_its_parents_hash_and_its_changes() -> None:
    parent = base()
    stage = staged(parent, EXTEND)
    assert stage.run_hash != parent.run_hash
    document = stage.identity.document
    assert document["training"]["continue_from"] == parent.run_hash
    assert document["training"]["seq_len"] == 256
    assert document["architecture"]["backbone"]["rope_base"] == 1e6
    assert "continue_from" not in parent.identity.document["training"]  # None is not hashed
    assert "yarn" not in parent.identity.document["architecture"]["backbone"]
    # The model a stage builds has the new RoPE base (the parent's, the preset's).
    assert build_model(stage.spec, stage.size, "meta").backbone.rope_base == 1e6
    assert build_model(parent.spec, parent.size, "meta").backbone.rope_base == 10_000.0


def test_the_parents_hash_is_part_of_the_stages_identity() -> None:
    seed0, seed1 = base(seed=0), base(seed=1)
    a, b = staged(seed0, EXTEND), staged(seed1, {**EXTEND})
    assert a.run_hash != b.run_hash
    # The same stage of the same parent is the same run; a changed field is another.
    assert staged(seed0, EXTEND).run_hash == a.run_hash
    assert staged(seed0, {**EXTEND, "rope_base": 5e5}).run_hash != a.run_hash


def test_a_yarn_evaluation_is_a_stage_of_its_own() -> None:
    extended = staged(base(), EXTEND)
    evaluation = staged(extended, YARN)
    assert evaluation.run_hash not in (extended.run_hash, base().run_hash)
    backbone = evaluation.identity.document["architecture"]["backbone"]
    assert backbone["yarn"] == {"factor": 8.0, "original_len": 256, "alpha": 1.0, "beta": 32.0}
    assert build_model(evaluation.spec, evaluation.size, "meta").backbone.yarn is not None


def test_the_stages_of_one_setting_share_its_setting_hash() -> None:
    """Variants and seeds of one stage are compared as their parents are: the stage's setting
    hash holds the parent's setting hash, not its run hash."""
    stages = [staged(base(v, s), EXTEND) for v in ("baseline", "g1-elementwise") for s in (0, 1)]
    assert len({s.identity.setting_hash for s in stages}) == 1
    assert len({s.run_hash for s in stages}) == 4
    assert stages[0].identity.setting_hash != base().identity.setting_hash


def test_a_stage_needs_its_parents_hashes() -> None:
    parent = base()
    recipe = derive_recipe(parent.recipe, {**EXTEND, "continue_from": parent.run_hash})
    with pytest.raises(ValueError, match=f"continues from {parent.run_hash}"):
        resolve_setting(parent.spec, recipe, CPU)
    with pytest.raises(ValueError, match="the parent given is"):
        resolve_setting(parent.spec, parent.recipe, CPU, parent=lineage(parent))


@pytest.fixture()
def store(mlflow_uri: str) -> tuple[object, str]:
    client, uri = RunTracker.client_for(mlflow_uri)
    return client, uri


def _recorded(store: tuple[object, str], run_hash: str, status: RunStatus,
              **tags: str) -> str:
    client, uri = store
    tracker = RunTracker.open(client, uri, "gatelab", "parent", None)
    tracker.set_tags({Tag.RUN_HASH: run_hash, Tag.STATUS: status, **tags})
    return tracker.run_id


def test_a_missing_parent_names_its_hash_and_what_to_run(tmp_path: Path) -> None:
    recipe = load_recipe("tiny", {"continue_from": "0123456789abcdef", "steps": 0})
    resources = Resources(device="cpu", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          work_dir=tmp_path / "work")
    with pytest.raises(ParentError) as info:
        train(load_variant("baseline"), recipe, resources)
    message = str(info.value)
    assert "continue_from 0123456789abcdef: no run of that hash in experiment 'gatelab'" in message
    assert "train it first" in message and "save_weights=true" in message


def test_an_unfinished_parent_says_how_it_ended(store: tuple[object, str]) -> None:
    run_id = _recorded(store, "00000000000000aa", RunStatus.FAILED, **{Tag.FAILURE: "boom"})
    with pytest.raises(ParentError) as info:
        find_parent(store[0], "gatelab", "00000000000000aa")
    assert (f"continue_from 00000000000000aa: its run {run_id} is failed (boom), not finished"
            in str(info.value))
    assert "train it first" in str(info.value)


def test_a_parent_without_weights_says_how_to_get_them(store: tuple[object, str]) -> None:
    run_id = _recorded(store, "00000000000000bb", RunStatus.FINISHED,
                       **{Tag.SETTING_HASH: "s" * 16, Tag.LR_SETTING_HASH: "l" * 16})
    parent = find_parent(store[0], "gatelab", "00000000000000bb")
    assert parent.lineage == Lineage("00000000000000bb", "s" * 16, "l" * 16)
    assert parent.tags() == {Tag.PARENT_HASH: "00000000000000bb", Tag.PARENT_RUN_ID: run_id}
    with pytest.raises(ParentError) as info:
        parent_weights(store[0], parent)
    message = str(info.value)
    assert f"its run {run_id} finished without its final weights (final_weights.pt)" in message
    assert f"mlflow runs delete --run-id {run_id}" in message
