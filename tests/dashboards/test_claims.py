"""The claims are data: the shipped table loads, a user's own file adds a claim without code,
and a broken entry is refused naming the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from synthetic import FakeRun, frame

from gatelab.dashboards.verdicts.claims import ClaimKind, Direction, Scale, load_claims
from gatelab.dashboards.verdicts.procedure import verdicts
from gatelab.registry.errors import SpecError
from gatelab.registry.loader import spec_paths
from gatelab.verdict import Verdict


def test_the_shipped_claims_load_and_name_registered_variants() -> None:
    claims = load_claims()
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids)) >= 25
    known = set(spec_paths())
    for claim in claims:
        assert set(claim.variants()) <= known | {"baseline"}, claim.id
        assert set(claim.controls) <= known, claim.id
    by_id = {c.id: c for c in claims}
    assert by_id["massive-activations-lower"].scale is Scale.LOG_RATIO
    assert by_id["gate-scores-sparse"].kind is ClaimKind.LEVEL
    assert by_id["gate-scores-sparse"].threshold == 0.2
    assert "sdpa-scale" in by_id["gate-lowers-loss"].controls
    # The paper's mechanism claims compare two variants, not each with the baseline.
    assert by_id["sigmoid-beats-silu"].reference == "g1-silu"


def test_a_user_adds_a_claim_without_code(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "claims.yaml").write_text(
        "claims:\n"
        "  - id: headwise-raises-gate-scores\n"
        "    statement: Headwise gate scores sit higher than elementwise ones\n"
        "    paper: 0.172 vs 0.116 (T4)\n"
        "    variant: g1-headwise\n"
        "    reference: g1-elementwise\n"
        "    metric: gate_score.mean\n"
        "    direction: higher\n")
    monkeypatch.chdir(tmp_path)
    (claim,) = load_claims()
    assert claim.direction is Direction.HIGHER
    runs = ([FakeRun("g1-elementwise", s, metrics={"gate_score.mean": 0.12 + 0.01 * s})
             for s in range(4)]
            + [FakeRun("g1-headwise", s, metrics={"gate_score.mean": 0.17 + 0.011 * s})
               for s in range(4)])
    table = verdicts(frame(runs), [claim])
    row = table.row(0, named=True)
    assert table.height == 1 and row["claim"] == "headwise-raises-gate-scores"
    assert row["verdict"] == Verdict.REPRODUCED and row["estimate"] == pytest.approx(0.0515)


@pytest.mark.parametrize(("entry", "field", "says"), [
    ("  - {id: x, statement: s, paper: p, kind: pairwise}", "claims[0] (x).kind",
     "did you mean 'paired'?"),
    ("  - {id: x, statement: s, paper: p, kind: level}", "claims[0] (x).threshold",
     "needs a threshold"),
    ("  - {id: x, statement: s, paper: p, scale: log}", "claims[0] (x).scale", "allowed:"),
    ("  - {id: x, statement: s, paper: p, reference: g1-elementwise}",
     "claims[0] (x).reference", "must differ"),
    ("  - {statement: s, paper: p}", "claims[0].id", "missing"),
])
def test_a_broken_claim_names_the_file_entry_and_field(tmp_path: Path, entry: str, field: str,
                                                       says: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(f"claims:\n{entry}\n")
    with pytest.raises(SpecError) as err:
        load_claims(path)
    text = str(err.value)
    assert str(path) in text and field in text and says in text


def test_claims_twice_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("claims:\n  - {id: a, statement: s, paper: p}\n"
                    "  - {id: a, statement: t, paper: q}\n")
    with pytest.raises(SpecError, match="'a' is used twice"):
        load_claims(path)
    with pytest.raises(FileNotFoundError, match="--claims FILE"):
        load_claims(tmp_path / "nope.yaml")


def test_a_claim_on_a_missing_variant_is_left_out() -> None:
    runs = frame([FakeRun("baseline", s) for s in range(3)])
    assert verdicts(runs).filter(pl.col("claim") == "gate-lowers-loss").is_empty()
