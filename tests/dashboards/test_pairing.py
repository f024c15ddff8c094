"""Comparisons by identity (issue 25): a variant id recorded with two architectures (a shipped
id replaced with ``gatelab new --force``, a spec edited between runs) is one variant per
architecture, ``ID@HASH8``, in the frame, the tables, the verdicts and ``gatelab compare``; no
baseline run is ever paired twice; a run's recorded ``spec.*`` params hash to the registry's
spec hash; and the sweep's planner still sees the id as recorded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from synthetic import FakeRun, frame, log_run

from gatelab.cli.main import main
from gatelab.dashboards import load
from gatelab.dashboards.store.columns import FINAL_METRICS
from gatelab.dashboards.store.identity import (
    UNKNOWN,
    group_architectures,
    spec_hash,
    split_variants,
)
from gatelab.dashboards.tables.compare import compare_variants, paired_diff
from gatelab.verdict import Verdict

REPLACED = {"spec.gate.position": "G2"}
"""What the replacing spec of ``g1-elementwise`` changes: its gate moves to G2."""


@dataclass
class Replaced(FakeRun):
    """A run of a variant id whose spec was replaced: its ``spec.*`` params (and so its run
    hash) differ from the shipped spec's."""

    spec: dict[str, str] = field(default_factory=lambda: dict(REPLACED))

    @property
    def run_hash(self) -> str:
        text = f"{super().run_hash}|{sorted(self.spec.items())}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def params(self) -> dict[str, str]:
        return {**super().params(), **self.spec}


RUNS: list[FakeRun] = (
    [FakeRun("baseline", s, 5.0 + 0.1 * s) for s in range(3)]
    + [FakeRun("g1-elementwise", s, 4.9 + 0.1 * s) for s in range(3)]
    + [Replaced("g1-elementwise", s, 4.0 + 0.2 * s) for s in range(2)]
)
"""Three baseline seeds; the shipped G1 elementwise on seeds 0-2 (0.1 below the baseline);
the id replaced by a G2 gate on seeds 0-1 (1.0 and 0.9 below). Pooled, seeds 0 and 1 of the
baseline would each be paired twice: five pairs from three baseline runs."""


@pytest.fixture(scope="module")
def replaced_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite MLflow store holding ``RUNS`` in sweep ``t``."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("replaced")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("gatelab",
                                          artifact_location=str(folder / "artifacts"))
    for run in RUNS:
        log_run(client, experiment, run, with_history=False)
    return uri


def _labels(frame: pl.DataFrame) -> list[str]:
    return sorted(v for v in set(frame["variant"].to_list()) if v.startswith("g1-"))


def test_an_id_with_two_architectures_is_two_labelled_variants(replaced_store: str) -> None:
    runs = load("t", tracking_uri=replaced_store)
    shipped, replaced = RUNS[3], RUNS[6]
    hashes = {spec_hash({k.removeprefix("spec."): v for k, v in run.params().items()
                         if k.startswith("spec.")}) for run in (shipped, replaced)}
    labels = _labels(runs.frame)
    assert labels == sorted(f"g1-elementwise@{h[:8]}" for h in hashes)
    assert set(runs.frame["variant_id"].to_list()) == {"baseline", "g1-elementwise"}
    assert set(runs.frame["spec_hash"].drop_nulls().to_list()) >= hashes
    assert split_variants(runs.frame) == {"g1-elementwise": labels}
    assert runs.frame.filter(pl.col("variant") == "baseline")["variant"].len() == 3


def test_no_baseline_run_is_paired_twice(replaced_store: str) -> None:
    runs = load("t", tracking_uri=replaced_store)
    fin = runs.frame
    by_label = {label: compare_variants(fin, label, "baseline", FINAL_METRICS)
                .filter(pl.col("metric") == "val_loss").row(0, named=True)
                for label in _labels(fin)}
    pairs = sorted((row["n_pairs"], round(row["diff"], 6)) for row in by_label.values())
    assert pairs == [(2, -0.95), (3, -0.1)]  # not 5 pairs from 3 baseline runs
    assert compare_variants(fin, "g1-elementwise", "baseline", FINAL_METRICS).is_empty()
    table1 = runs.table1()
    assert sorted(table1["variant"].to_list()) == sorted(["baseline", *_labels(fin)])
    assert table1["n_pairs"].drop_nulls().max() == 3  # type: ignore[operator]


def test_a_claim_naming_the_id_is_not_tested_and_names_its_architectures(
        replaced_store: str) -> None:
    runs = load("t", tracking_uri=replaced_store)
    table = runs.verdicts()
    row = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert row["verdict"] == Verdict.INCONCLUSIVE and row["n"] == 0 and row["p_value"] is None
    assert all(label in row["note"] for label in _labels(runs.frame))
    assert "not tested" in row["statistic"]
    assert (table["n"] <= 3).all()


def test_compare_refuses_the_bare_id_and_pairs_a_label(
        replaced_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.html"
    code = main(["compare", "g1-elementwise", "baseline", "--sweep", "t", "--tracking-uri",
                 replaced_store, "--out", str(page)])
    err = capsys.readouterr().err
    labels = _labels(load("t", tracking_uri=replaced_store).frame)
    assert code != 0 and len(err.splitlines()) == 1
    assert "'g1-elementwise' was recorded with 2 architectures" in err
    assert all(label in err for label in labels) and not page.exists()
    code = main(["compare", labels[0], "baseline", "--sweep", "t", "--tracking-uri",
                 replaced_store, "--out", str(page)])
    out = capsys.readouterr().out
    assert code == 0 and page.exists() and labels[0] in out


def test_the_planner_reads_the_id_as_recorded(replaced_store: str) -> None:
    """The sweep's plan matches recorded runs to its own (variant, seed, lr): it reads the
    recorded id, not the label, or an edited spec's old runs would never show as ``stale``."""
    from gatelab.runners.sweep.plan import recorded_runs

    recorded = recorded_runs(replaced_store, "gatelab")
    assert {r.variant for r in recorded.values()} == {"baseline", "g1-elementwise"}
    assert len(recorded) == len(RUNS)


def test_recorded_params_hash_as_the_registry_hashes_the_spec() -> None:
    """A run logs its architecture flattened into ``spec.*`` params; rebuilt from them, every
    shipped spec hashes to its ``gatelab show`` spec hash."""
    from gatelab.registry.hashing import spec_hash as registry_hash
    from gatelab.registry.loader import load_all
    from gatelab.registry.schema import architecture_dict
    from gatelab.runners.run.tracking import flatten

    specs = load_all()
    assert len(specs) > 30
    for spec in specs:
        params = flatten({"spec": architecture_dict(spec)})
        recorded = {k.removeprefix("spec."): v for k, v in params.items()}
        assert spec_hash(recorded) == registry_hash(spec), spec.id


def test_runs_of_an_older_schema_join_the_architecture_they_agree_with() -> None:
    full = {"gate.position": "G1", "gate.granularity": "elementwise", "sink_tokens": "0"}
    older = {"gate.position": "G1", "gate.granularity": "elementwise"}  # before sink_tokens
    other = {"gate.position": "G2", "gate.granularity": "elementwise", "sink_tokens": "0"}
    no_gate = {"gate": "None", "sink_tokens": "0"}
    assert group_architectures([full, older, other, no_gate]) == [0, 0, 1, 2]
    partial = {"gate.granularity": "elementwise"}  # agrees with both G1 and G2
    assert group_architectures([full, other, partial]) == [0, 1, None]


@dataclass
class Older(FakeRun):
    """A run recorded before the schema had the field whose param is ``missing``."""

    missing: str = ""

    def params(self) -> dict[str, str]:
        return {k: v for k, v in super().params().items() if k != self.missing}


def test_one_architecture_keeps_its_id_and_an_unplaceable_run_is_labelled_unknown() -> None:
    one = frame([FakeRun("g1-elementwise", 0), Older("g1-elementwise", 1,
                                                      missing="spec.capacity.q_heads_mult")])
    assert one["variant"].to_list() == ["g1-elementwise"] * 2
    assert one["variant_id"].to_list() == ["g1-elementwise"] * 2
    assert one["spec_hash"].n_unique() == 2  # each run's own record, as it was written
    # Without its gate position the run agrees with both the G1 and the G2 architecture.
    runs = frame([FakeRun("g1-elementwise", 0), Replaced("g1-elementwise", 1),
                  Older("g1-elementwise", 2, missing="spec.gate.position")])
    by_seed = dict(zip(runs["seed"].to_list(), runs["variant"].to_list(), strict=True))
    assert by_seed[2] == f"g1-elementwise@{UNKNOWN}"
    assert by_seed[0] != by_seed[1] and by_seed[0].startswith("g1-elementwise@")


def test_paired_diff_refuses_two_runs_of_one_seed() -> None:
    """A frame built by hand that pools two architectures under one name is refused, not
    paired twice with one baseline run."""
    runs = frame([FakeRun("baseline", 0), FakeRun("g1-elementwise", 0)])
    twice = pl.concat([runs, runs.filter(pl.col("variant") == "g1-elementwise")
                       .with_columns(pl.lit("other").alias("run_id"))])
    with pytest.raises(ValueError, match="g1-elementwise has 2 runs of seed 0 in setting"):
        paired_diff(twice, "val_loss")
