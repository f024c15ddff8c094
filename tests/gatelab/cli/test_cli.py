"""The registry commands, run as a user runs them: the installed `gatelab` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GATELAB = [sys.executable, "-m", "gatelab"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATELAB, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_list_json_has_every_named_paper_row() -> None:
    result = run("list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    by_row = {label: r for r in rows for label in r["paper_rows"]}
    wanted = [f"T1-{i}" for i in range(1, 16)] + ["T3-5", "T3-6", "T3-7", "T4-6", "T4-7",
                                                  "T2-7", "T2-2", "T2-9", "T6-5"]
    assert not [w for w in wanted if w not in by_row]
    for r in rows:
        assert {"id", "paper_row", "added_params_paper", "gate"} <= r.keys()
        assert isinstance(r["added_params_paper"], int)
        assert r["gate"] is None or r["gate"]["position"] in {"G1", "G2", "G3", "G4", "G5"}
    assert by_row["T1-1"]["gate"] is None and by_row["T1-1"]["added_params_paper"] == 0
    assert by_row["T1-10"]["gate"]["granularity"] == "headwise"


def test_list_table_and_show() -> None:
    listed = run("list")
    assert listed.returncode == 0
    assert "g1-elementwise" in listed.stdout and "T1-5" in listed.stdout and "201M" in listed.stdout
    shown = run("show", "g1-headwise")
    assert shown.returncode == 0
    assert "granularity: headwise" in shown.stdout and "spec hash:" in shown.stdout


def test_show_unknown_variant_exits_2_with_a_suggestion() -> None:
    result = run("show", "g1-headwse")
    assert result.returncode == 2
    assert "did you mean 'g1-headwise'" in result.stderr


def test_validate_exit_codes(tmp_path: Path) -> None:
    good = REPO / "ablations" / "g1-elementwise.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: baseline\ndescription: d\nhypothesis: h\ngate: {position: G5, "
                   "granularity: headwise}\n")
    assert run("validate", str(good)).returncode == 0
    result = run("validate", str(good), str(bad))
    assert result.returncode == 1
    assert f"{bad}: gate.granularity: 'headwise' is not allowed" in result.stderr
    assert "1 of 2 spec files are invalid" in result.stderr


def test_the_old_preset_flag_names_its_replacement() -> None:
    shown = run("show", "g1-headwise", "--preset", "tiny")
    assert shown.returncode == 2 and "--preset was renamed: use --size SIZE" in shown.stderr
    trained = run("train", "baseline", "--preset", "tiny")
    assert trained.returncode == 2 and "use --recipe NAME" in trained.stderr
    sized = run("show", "g1-headwise", "--size", "sink-cpu")
    assert sized.returncode == 0 and "qk_norm: false" in sized.stdout


def test_closed_choices_are_checked_with_the_allowed_values() -> None:
    backend = run("train", "baseline", "--backend", "fast")
    assert backend.returncode == 2
    assert "choose from 'auto', 'sdpa', 'flash', 'explicit'" in backend.stderr
    tokenizer = run("train", "baseline", "--set", "data.tokenizer=words")
    assert tokenizer.returncode == 2
    assert "data.tokenizer: 'words' is not allowed; allowed: bpe, bytes" in tokenizer.stderr


def test_a_users_own_ablations_folder_is_searched_first(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my-gate.yaml").write_text(
        "base: g1-elementwise\ndescription: mine\nhypothesis: h\ngate: {activation: silu}\n")
    listed = run("list", "--json", "--ablations", str(mine))
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows["my-gate"]["activation"] == "silu" and "baseline" in rows
    away = subprocess.run([*GATELAB, "list", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # not the repository: the shipped specs
    assert away.returncode == 0 and "my-gate" not in away.stdout
    assert len(json.loads(away.stdout)) == len(list((REPO / "ablations").glob("*.yaml")))
