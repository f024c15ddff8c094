"""sweeps.yaml is validated before anything starts, with errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.registry.errors import SpecError
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.sweep.plan import expand, make_plan
from gatelab.runners.sweep.spec import (
    RunResources,
    get_sweep,
    load_sweeps,
    read_sweeps,
    selected_variants,
)
from gatelab.shipped import ABLATIONS_ENV


def test_the_shipped_sweeps_load_and_name_known_variants() -> None:
    sweeps = load_sweeps()
    assert {"smoke", "table1", "table4", "lr-tolerance", "lr-search", "all"} <= sweeps.keys()
    table1 = {s.id for s in selected_variants(sweeps["table1"])}
    assert {"baseline", "more-experts", "g1-elementwise", "g1-silu"} <= table1
    assert len(table1) == 15
    tolerance = sweeps["lr-tolerance"]
    assert len(tolerance.seeds) >= 3 and len(tolerance.lrs) >= 3


def test_every_run_of_every_sweep_has_a_distinct_hash(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "data" / "fineweb-edu"  # the GPU recipes' corpus, a stand-in
    corpus.mkdir(parents=True)
    (corpus / "000.jsonl").write_text("\n".join(f'{{"text": "document {i}"}}' for i in range(9)))
    monkeypatch.chdir(tmp_path)
    for name, sweep in load_sweeps().items():
        if sweep.search is not None:
            continue
        plan = make_plan(expand(sweep), {}, resolve_numerics("cpu"), stages=sweep.stages)
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


HEAD = "s:\n  description: d\n  variants: [baseline]\n"


@pytest.mark.parametrize(("body", "expected"), [
    ("  seeds: [0, -1]\n", "s.seeds[1]: -1 is out of range: must be >= 0 and <= 4_294_967_295"),
    ("  lrs: [.nan]\n", "s.lrs[0]: nan is not a finite number; must be > 0 and <= 10"),
    ("  lrs: [0.01, 0]\n", "s.lrs[1]: 0 is out of range: must be > 0 and <= 10"),
    ("  resources: {cpus: .inf}\n", "s.resources.cpus: inf is not a finite number; must be >= 0.1"),
    ("  resources: {cpus: 0}\n", "s.resources.cpus: 0 is out of range: must be >= 0.1"),
    ("  resources: {gpus: -1}\n", "s.resources.gpus: -1 is out of range: must be >= 0"),
    ("  resources: {threads: 0}\n", "s.resources.threads: 0 is out of range: must be >= 1"),
    ("  search: {lr_min: .nan}\n", "s.search.lr_min: nan is not a finite number"),
    ("  search: {lr_min: 0}\n", "s.search.lr_min: 0 is out of range: must be > 0 and <= 10"),
    ("  search: {lr_max: .inf}\n", "s.search.lr_max: inf is not a finite number"),
    ("  search: {trials: 0}\n", "s.search.trials: 0 is out of range: must be >= 1"),
    ("  search: {lr_min: 0.1, lr_max: 0.01}\n",
     "s.search: needs lr_min < lr_max, got lr_min 0.1 and lr_max 0.01"),
    ("  select: {paper_table: 0}\n", "s.select.paper_table: 0 is out of range: must be >= 1"),
])
def test_a_bad_number_in_a_sweep_is_named(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, HEAD + body)
    with pytest.raises(SpecError) as info:
        load_sweeps(path)
    assert f"{path}: {expected}" in str(info.value)


@pytest.mark.parametrize(("body", "expected"), [
    ("  overrides: {steps: 0}\n",
     "s.overrides.steps: steps: 0 trains nothing, which only a continuation can do"),
    ("  overrides: {steps: -1}\n",
     "s.overrides.steps: steps: -1 is out of range: must be >= 0 and <= 1_000_000_000"),
    ("  stages: [{name: extend, overrides: {seq_len: 0}}]\n",
     "s.stages[0].overrides.seq_len: seq_len: 0 is out of range: must be >= 2"),
    ("  stages: [{name: extend, overrides: {lr: 0.1}}]\n",
     "s.stages[0].overrides.lr: a stage keeps the lr of the run it continues from"),
    ("  stages: [{name: x, overrides: {}}, {name: x, overrides: {}}]\n",
     "s.stages[1].name: 'x': each stage needs a name of its own"),
    ("  overrides: {stepz: 3}\n",
     "s.overrides.stepz: stepz: unknown field (did you mean 'steps'?)"),
    ("  overrides: {data.tokenizer: words}\n",
     "s.overrides.data.tokenizer: data.tokenizer: 'words' is not allowed; allowed: bpe, bytes"),
    ("  overrides: {data: {vocab_size: 100}}\n",
     "s.overrides.data: data.vocab_size: 100 is out of range: must be >= 258"),
    ("  overrides: {size: tiny-mo}\n",
     "s.overrides.size: size: 'tiny-mo' is not a size preset (did you mean 'tiny-moe'?)"),
])
def test_a_bad_override_fails_at_load_naming_the_sweep(tmp_path: Path, body: str,
                                                       expected: str) -> None:
    path = _write(tmp_path, HEAD + body)
    with pytest.raises(SpecError) as info:
        load_sweeps(path)
    assert f"{path}: {expected}" in str(info.value).splitlines()[0]


def test_interpolation_in_a_sweeps_file_is_rejected(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATELAB_TEST_SECRET", "300")
    path = _write(tmp_path, HEAD + "  overrides: {steps: '${oc.env:GATELAB_TEST_SECRET}'}\n")
    with pytest.raises(SpecError) as info:
        load_sweeps(path)
    message = str(info.value)
    assert message == (f"{path}: s.overrides.steps: '${{oc.env:GATELAB_TEST_SECRET}}' is not "
                       "allowed: configuration files are plain data (no ${...} interpolation "
                       "or resolvers); write the value itself")
    assert "300" not in message


@pytest.fixture
def bad_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An invalid spec file in a user ablation folder searched first."""
    folder = tmp_path / "ablations"
    folder.mkdir()
    monkeypatch.setenv(ABLATIONS_ENV, str(folder))
    path = folder / "my-bad-gate.yaml"
    path.write_text("base: g1-elementwise\ndescription: d\nhypothesis: h\n"
                    "gate:\n  init: {std: .nan}\n")
    return path


def test_a_bad_spec_file_fails_only_the_sweeps_that_use_it(tmp_path: Path,
                                                           bad_spec: Path) -> None:
    path = _write(tmp_path, HEAD + "g1:\n  description: d\n  select: {position: G1}\n"
                  "bad:\n  description: d\n  variants: [baseline, my-bad-gate]\n")
    sweeps = load_sweeps(path)  # ids are file names: no spec is loaded to check them
    assert [s.id for s in selected_variants(get_sweep("s", path))] == ["baseline"]
    with pytest.raises(SpecError) as info:
        get_sweep("g1", path)
    assert str(info.value) == (
        f"{path}: g1.select: reads every spec file, and {bad_spec} is invalid: gate.init.std: "
        "nan is not a finite number; must be > 0 and <= 10")
    with pytest.raises(SpecError) as info:
        get_sweep("bad", path)
    assert str(info.value).startswith(f"{path}: bad.variants[1]: 'my-bad-gate' is invalid: "
                                      f"{bad_spec}: gate.init.std: nan")
    with pytest.raises(SpecError, match="my-bad-gate.yaml: gate.init.std"):
        selected_variants(sweeps["g1"])


def test_command_line_sets_override_a_sweep_and_are_blamed_for_their_errors() -> None:
    from gatelab.registry.errors import SpecError
    from gatelab.runners.sweep.spec import get_sweep

    sweep = get_sweep("smoke", None, ["seeds=[3,4]", "overrides.steps=50", "max_seeds=6"])
    assert sweep.seeds == (3, 4) and sweep.overrides["steps"] == 50 and sweep.max_seeds == 6
    assert sweep.overrides["eval_every"] == 50  # the file's other overrides are kept
    with pytest.raises(SpecError) as err:
        get_sweep("smoke", None, ["overrides.stepz=50"])
    assert "--set overrides.stepz=50: stepz: unknown field (did you mean 'steps'?)" in str(
        err.value)
    with pytest.raises(SpecError, match=r"--set seeds=\[-1\]: smoke.seeds\[0\]: -1 is out"):
        get_sweep("smoke", None, ["seeds=[-1]"])
    with pytest.raises(SpecError, match="expected FIELD=VALUE"):
        get_sweep("smoke", None, ["seeds"])


@pytest.mark.parametrize(("cpus", "expected"), [
    ("0.001", "s.resources.cpus: 0.001 is out of range: must be >= 0.1 and <= 1024"),
    ("0.05", "s.resources.cpus: 0.05 is out of range: must be >= 0.1"),
])
def test_a_cpu_share_below_the_minimum_is_refused(tmp_path: Path, cpus: str,
                                                  expected: str) -> None:
    path = _write(tmp_path, HEAD + f"  resources: {{cpus: {cpus}}}\n")
    with pytest.raises(SpecError) as info:
        get_sweep("s", path)
    assert f"{path}: {expected}" in str(info.value)


def test_a_gpu_share_below_rays_granularity_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + "  resources: {gpus: 0.00001}\n")
    with pytest.raises(SpecError, match=r"s.resources.gpus: 1e-05 is below Ray's granularity"):
        get_sweep("s", path)


def test_cpu_shares_are_rounded_to_what_ray_places_and_slots_counted_as_ray_does(
        tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + "  resources: {cpus: 0.33333, gpus: 0.123456}\n")
    res = get_sweep("s", path).resources
    assert (res.cpus, res.gpus) == (0.3333, 0.1235)
    assert res.slots(2) == 6  # 20000 units // 3333 units
    assert RunResources(cpus=0.1).slots(2) == 20
    assert RunResources(cpus=0.3).slots(0.9) == 3  # 9000 // 3000: no float floor error
    assert RunResources(cpus=4).slots(2) == 1


def test_a_bad_entry_fails_only_its_own_sweep(tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + "broken:\n  description: d\n  variants: [basline]\n"
                  "  seeds: []\n"
                  "other:\n  description: d\n  variants: [g1-elementwise]\n")
    file = read_sweeps(path)
    assert set(file.sweeps) == {"s", "other"} and set(file.problems) == {"broken"}
    assert file.names() == ["s", "other", "broken"]
    assert [v.id for v in selected_variants(get_sweep("other", path))] == ["g1-elementwise"]
    plan = make_plan(expand(get_sweep("s", path)), {}, resolve_numerics("cpu"))
    assert [p.spec.id for p in plan] == ["baseline"]  # the good sweep plans as before
    with pytest.raises(SpecError) as info:
        get_sweep("broken", path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}: broken.variants[0]: 'basline' is not a known variant (did you mean "
        "'baseline'?)",
        f"{path}: broken.seeds: needs at least one seed"]
    with pytest.raises(SpecError, match="broken.variants"):
        load_sweeps(path)  # the whole file checked, as `gatelab validate` would
