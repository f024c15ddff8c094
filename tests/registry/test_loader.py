"""Every spec in ablations/ loads; each kind of bad spec is rejected with its documented message."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelab.registry.errors import Problem, SpecError
from gatelab.registry.from_dict import from_dict
from gatelab.registry.loader import load_all, load_all_valid, load_spec, load_variant
from gatelab.registry.rules import BOUNDS
from gatelab.registry.schema import (
    Activation,
    GateInput,
    Position,
    Sharing,
    VariantSpec,
    to_plain,
)
from gatelab.shipped import shipped_ablations


def test_every_ablation_loads_with_a_description_and_hypothesis() -> None:
    specs = load_all()
    assert len(specs) >= 24
    for spec in specs:
        assert spec.description and spec.hypothesis, spec.id
        assert (shipped_ablations() / f"{spec.id}.yaml").is_file()


def test_a_diff_inherits_its_base_gate_and_not_its_paper_rows() -> None:
    g2_headwise = load_variant("g2-headwise")
    assert g2_headwise.base == "g2-elementwise"
    gate = g2_headwise.architecture.gate
    assert gate is not None
    assert gate.position is Position.G2
    assert gate.activation is Activation.SIGMOID
    assert [p.label for p in g2_headwise.paper] == ["T1-11", "T6-5"]
    assert load_variant("baseline").architecture.gate is None


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


HEAD = "base: baseline\ndescription: d\nhypothesis: h\n"

# (file body after HEAD, field named in the message, fragments the message must contain)
INVALID = {
    "unknown-field": ("gate:\n  positon: G2\n", "gate.positon",
                      ["unknown field", "did you mean 'position'", "allowed fields:"]),
    "bad-enum": ("gate:\n  position: G7\n", "gate.position",
                 ["'G7' is not allowed", "allowed: G1, G2, G3, G4, G5"]),
    "bad-enum-close": ("gate:\n  activation: sigmod\n", "gate.activation",
                       ["'sigmod' is not allowed", "did you mean 'sigmoid'"]),
    "wrong-type": ("gate:\n  init:\n    bias: high\n", "gate.init.bias",
                   ["expected a number", "'high' (str)"]),
    "wrong-type-bool": ("param_match: 3\n", "param_match", ["expected true or false", "3 (int)"]),
    "headwise-at-g5": ("gate:\n  position: G5\n  granularity: headwise\n", "gate.granularity",
                       ["'headwise' is not allowed", "no heads", "use elementwise"]),
    "shared-at-g5": ("gate:\n  position: G5\n  sharing: head-shared\n", "gate.sharing",
                     ["'head-shared' is not allowed", "no heads", "use head-specific"]),
    "gate-and-control": ("gate: {}\nsdpa_control: silu\n", "sdpa_control",
                         ["cannot be combined with a gate", "gate: null"]),
    "independent-bias": ("gate:\n  input: independent\n  init: {bias: 1.0}\n", "gate.init.bias",
                         ["not allowed with input: independent"]),
    "negative-mult": ("capacity:\n  q_heads_mult: -1\n", "capacity.q_heads_mult", ["must be > 0"]),
    "paper-row-missing": ("paper:\n  - {table: 1}\n", "paper[0].row", ["is required but missing"]),
    "nan-std": ("gate:\n  init: {std: .nan}\n", "gate.init.std",
                ["nan is not a finite number", "must be > 0 and <= 10"]),
    "inf-bias": ("gate:\n  init: {bias: -.inf}\n", "gate.init.bias",
                 ["-inf is not a finite number", "must be >= -100 and <= 100"]),
    "huge-mult": ("capacity:\n  q_heads_mult: 1e9\n", "capacity.q_heads_mult",
                  ["1000000000.0 is out of range", "must be > 0 and <= 64"]),
    "huge-experts": ("capacity:\n  extra_experts: 1000000\n", "capacity.extra_experts",
                     ["1000000 is out of range", "must be >= 0 and <= 1024"]),
    "paper-nan": ("paper:\n  - {table: 1, row: 1, name: x, ppl: .nan}\n", "paper[0].ppl",
                  ["nan is not a finite number", "expected a finite number"]),
    "paper-inf-benchmark": ("paper:\n  - {table: 1, row: 1, name: x, benchmarks: {mmlu: .inf}}\n",
                            "paper[0].benchmarks.mmlu", ["inf is not a finite number"]),
    "env-interpolation": ("gate:\n  init: {std: '${oc.env:GATELAB_TEST_SECRET}'}\n",
                          "gate.init.std", ["'${oc.env:GATELAB_TEST_SECRET}' is not allowed",
                                            "configuration files are plain data"]),
    "interpolation-in-text": ("paper:\n  - {table: 1, row: 1, name: 'row ${description}'}\n",
                              "paper[0].name", ["configuration files are plain data"]),
    "malformed-interpolation": ("gate:\n  init: {std: '${oc.env:X'}\n", "gate.init.std",
                                ["looks like an interpolation", "plain data"]),
    "bad-normaliser": ("normaliser:\n  kind: softmax1\n", "normaliser.kind",
                       ["'softmax1' is not allowed", "allowed: softmax, sink-logit"]),
    "clip-without-gamma": ("normaliser:\n  kind: clipped-softmax\n  zeta: 1.0\n",
                           "normaliser.gamma", ["is required with kind: clipped-softmax",
                                                "-0.03"]),
    "gamma-on-sigmoid": ("normaliser:\n  kind: sigmoid\n  gamma: -0.03\n", "normaliser.gamma",
                         ["not allowed with kind: sigmoid", "only clipped-softmax reads it",
                          "set gamma: null"]),
    "gamma-positive": ("normaliser: {kind: clipped-softmax, gamma: 0.5, zeta: 1.0}\n",
                       "normaliser.gamma", ["0.5 is out of range", "must be >= -1 and <= 0"]),
    "top-k-over-experts": ("switch_head: {n_experts: 2, top_k: 3}\n", "switch_head.top_k",
                           ["3 is more than n_experts (2)", "top_k <= n_experts"]),
    "zero-experts": ("switch_head: {n_experts: 0}\n", "switch_head.n_experts",
                     ["0 is out of range", "must be >= 1 and <= 64"]),
    "bad-projections": ("switch_head: {projections: q}\n", "switch_head.projections",
                        ["'q' is not allowed", "allowed: v, kv"]),
    "gate-on-switched-k": ("switch_head: {projections: kv, n_experts: 2}\ngate: {position: G3}\n",
                           "gate.position", ["'G3' is not allowed with switch_head on kv",
                                             "its router already gates", "gate: null"]),
    "many-sink-tokens": ("sink_tokens: 100\n", "sink_tokens",
                         ["100 is out of range", "must be >= 0 and <= 16"]),
    "source-without-year": ("sources:\n  - {authors: x, title: y}\n", "sources[0].year",
                            ["is required but missing"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_spec_is_rejected_with_file_field_value_and_fix(tmp_path: Path, case: str) -> None:
    body, field, fragments = INVALID[case]
    path = _write(tmp_path, case, HEAD + body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path.resolve()}: {field}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_an_interpolation_is_rejected_before_it_is_resolved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATELAB_TEST_SECRET", "0.5")
    path = _write(tmp_path, "secret",
                  HEAD + "gate:\n  init: {std: '${oc.env:GATELAB_TEST_SECRET}'}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "0.5" not in str(info.value)


def test_all_problems_of_a_file_are_reported_together(tmp_path: Path) -> None:
    path = _write(tmp_path, "two-bad", HEAD + "gate:\n  position: G9\n  combine: times\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [p.field for p in info.value.problems] == ["gate.position", "gate.combine"]


def test_unknown_base_names_the_closest_spec(tmp_path: Path) -> None:
    path = _write(tmp_path, "orphan", "base: g1-elementwize\ndescription: d\nhypothesis: h\n")
    with pytest.raises(SpecError, match="base: 'g1-elementwize' is not a known spec "
                                        r"\(did you mean 'g1-elementwise'\?\)"):
        load_spec(path)


def test_a_base_cycle_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "a", "base: b\ndescription: d\nhypothesis: h\n")
    path = _write(tmp_path, "b", "base: a\ndescription: d\nhypothesis: h\n")
    with pytest.raises(SpecError, match="makes a cycle: b -> a -> b"):
        load_spec(path)


def test_id_comes_from_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "named", HEAD + "id: other\n")
    with pytest.raises(SpecError, match="id: is not written in the file"):
        load_spec(path)
    with pytest.raises(SpecError, match="lowercase letters, digits and hyphens"):
        load_spec(_write(tmp_path, "Bad_Name", HEAD))


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="<yaml>: cannot be parsed"):
        load_spec(_write(tmp_path, "broken", HEAD + "gate: [unclosed\n"))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "absent.yaml")


def test_local_diff_of_a_local_base(tmp_path: Path) -> None:
    _write(tmp_path, "my-gate", HEAD.replace("baseline", "g1-elementwise")
           + "gate:\n  sharing: head-shared\n")
    path = _write(tmp_path, "my-gate-static", "base: my-gate\ndescription: d\nhypothesis: h\n"
                  "gate:\n  input: independent\n")
    gate = load_spec(path).architecture.gate
    assert gate is not None
    assert gate.sharing is Sharing.HEAD_SHARED
    assert gate.input is GateInput.INDEPENDENT


def test_gate_null_removes_the_base_gate(tmp_path: Path) -> None:
    path = _write(tmp_path, "ungated", HEAD.replace("baseline", "g1-headwise") + "gate: null\n")
    assert load_spec(path).architecture.gate is None


def test_unknown_variant_suggests_an_id() -> None:
    with pytest.raises(KeyError, match="did you mean 'g1-headwise'"):
        load_variant("g1-headwse")


def test_load_all_valid_returns_the_good_specs_and_names_each_bad_file(tmp_path: Path) -> None:
    _write(tmp_path, "mine", HEAD)
    broken = _write(tmp_path, "broken", HEAD + "gate:\n  init: {std: .nan}\n")
    child = _write(tmp_path, "child", "base: broken\ndescription: d\nhypothesis: h\n")
    specs, errors = load_all_valid(tmp_path)
    assert [s.id for s in specs] == ["mine"]
    assert [e.source for e in errors] == [str(broken.resolve()), str(child.resolve())]
    assert "gate.init.std: nan is not a finite number" in str(errors[0])
    assert str(errors[1]).startswith(f"{child.resolve()}: base: 'broken' is invalid: "
                                     f"{broken.resolve()}: gate.init.std: nan")
    with pytest.raises(SpecError, match="broken.yaml: gate.init.std"):
        load_all(tmp_path)


def test_every_shipped_spec_is_valid() -> None:
    specs, errors = load_all_valid()
    assert not errors
    assert [s.id for s in specs] == [s.id for s in load_all()]


def test_each_family_holds_its_variants_and_every_borrowed_one_cites_its_source() -> None:
    from gatelab.registry.schema import Family

    specs = load_all()
    assert len(specs) >= 33
    families = {spec.id: spec.family for spec in specs}
    assert families["baseline"] is Family.CONTROLS
    assert families["sdpa-scale"] is Family.CONTROLS
    assert families["g1-elementwise"] is Family.GATES
    assert families["switch-v-1-top-1"] is Family.SWITCH_HEAD
    assert families["g1-headwise-sink-logit"] is Family.SINK_MITIGATIONS
    sinks = {"sink-logit", "sink-token", "softmax-plus-one", "clipped-softmax",
             "sigmoid-attention", "relu-attention"}
    assert sinks <= {i for i, f in families.items() if f is Family.SINK_MITIGATIONS}
    assert len([f for f in families.values() if f is Family.SWITCH_HEAD]) == 5
    for spec in specs:
        if spec.family in (Family.SWITCH_HEAD, Family.SINK_MITIGATIONS):
            assert spec.sources, spec.id
            for source in spec.sources:
                assert source.authors and source.title and source.year >= 2017, spec.id
                assert source.venue or source.arxiv or source.url, spec.id


def test_table6_rows_are_the_switch_head_specs_and_g2_headwise() -> None:
    rows = {p.label: s.id for s in load_all() for p in s.paper if p.table == 6}
    assert sorted(rows) == ["T6-1", "T6-2", "T6-3", "T6-4", "T6-5"]
    assert [s.id for s in load_all() for p in s.paper if p.label == "T6-5"] == [
        "g2-headwise", "switch-v-1-top-1"]


def test_a_spec_file_is_flat_and_reads_back_as_it_is_written(tmp_path: Path) -> None:
    """The spec holds its ``Architecture``, but a file writes the architecture's fields beside
    the descriptive ones; ``to_plain`` and ``from_dict`` both read it that way."""
    spec = load_variant("g1-headwise-sink-logit")
    data = to_plain(spec)
    assert isinstance(data, dict) and "architecture" not in data
    assert data["gate"]["granularity"] == "headwise" and data["normaliser"]["kind"] == "sink-logit"
    problems: list[Problem] = []
    assert from_dict(VariantSpec, data, problems, bounds=BOUNDS) == spec and problems == []
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, "nested", HEAD + "architecture:\n  gate: {}\n"))
    assert str(info.value).endswith(
        ": architecture: unknown field; allowed fields: id, description, hypothesis, base, gate, "
        "sdpa_control, norm, capacity, param_match, normaliser, sink_tokens, switch_head, paper, "
        "sources"), str(info.value)
