"""``gatelab new NAME --from VARIANT --set ...``: a valid spec as a diff, found by every
command from the current folder; bad input named with its --set and left unwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatelab.cli.main import main
from gatelab.registry.loader import load_variant


def test_new_writes_a_valid_diff_found_from_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["new", "my-gate", "--from", "g1-elementwise", "--set",
                 "gate.granularity=headwise", "--set", "gate.activation=silu"])
    out = capsys.readouterr().out
    assert code == 0 and "gatelab train my-gate" in out
    data = yaml.safe_load((tmp_path / "ablations" / "my-gate.yaml").read_text())
    assert data["base"] == "g1-elementwise" and data["gate"] == {
        "granularity": "headwise", "activation": "silu"}
    spec = load_variant("my-gate")  # ./ablations is searched first
    gate = spec.architecture.gate
    assert gate is not None and gate.granularity.value == "headwise"
    assert gate.activation.value == "silu" and gate.position.value == "G1"
    assert main(["list", "--json"]) == 0 and "my-gate" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "says"), [
    (["bad-gate", "--from", "g1-elementwise", "--set", "gate.granularity=rowwise"],
     "--set gate.granularity=rowwise: gate.granularity: 'rowwise' is not allowed"),
    (["x", "--from", "g1-elemntwise"], "did you mean 'g1-elementwise'?"),
    (["Bad_Name", "--from", "baseline"], "is not a spec id"),
    (["y", "--from", "baseline", "--set", "gate.position"], "expected FIELD=VALUE"),
])
def test_new_refuses_bad_input_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], says: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", *args]) != 0
    assert says in capsys.readouterr().err
    assert not list(tmp_path.glob("ablations/*.yaml"))


def test_force_replaces_a_file_and_may_reuse_a_shipped_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--force`` both are refused (``tests/gatelab/cli/test_errors.py``); with it the
    file is written and the output says what it replaced or hides."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATELAB_ABLATIONS", raising=False)
    assert main(["new", "g1-headwise", "--from", "g1-elementwise", "--set",
                 "gate.activation=silu"]) != 0
    assert not (tmp_path / "ablations").exists()
    capsys.readouterr()
    assert main(["new", "g1-headwise", "--from", "g1-elementwise", "--set",
                 "gate.activation=silu", "--force"]) == 0
    out = capsys.readouterr().out
    assert "one of them now hides the other" in out and "g1-headwise.yaml" in out
    spec = load_variant("g1-headwise")  # ./ablations now hides the shipped spec
    assert spec.architecture.gate is not None
    assert spec.architecture.gate.activation.value == "silu"
    assert main(["new", "g1-headwise", "--from", "g1-elementwise", "--force"]) == 0
    assert "replaced ablations/g1-headwise.yaml" in capsys.readouterr().out
    data = yaml.safe_load((tmp_path / "ablations" / "g1-headwise.yaml").read_text())
    assert "gate" not in data
