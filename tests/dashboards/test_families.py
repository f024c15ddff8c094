"""The family table (``dashboards/tables/families.py``) on synthetic runs with known answers, and
through the query API (``runs.families()``) on a real store."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from synthetic import FakeRun, Store, frame

from gatelab import dashboards
from gatelab.dashboards.tables.families import UNKNOWN, family_of, family_table
from gatelab.registry.schema import Family

BASE = [5.00, 5.10, 4.95]
SINK = [4.97, 5.05, 4.93]
STEPS = 40
# The synthetic store knows a few variant names; the frame is renamed to the new families'.
RENAME = {"g2-elementwise": "sink-logit", "custom-variant": "switch-v-4-top-4",
          "g1-ns-sigmoid": "no-such-spec"}


def _runs() -> pl.DataFrame:
    fakes = []
    for seed in range(3):
        fakes += [
            FakeRun("baseline", seed, BASE[seed],
                    metrics={"f_attn": 0.40 + 0.01 * seed, "train_time_s": 2.0}),
            FakeRun("g2-elementwise", seed, SINK[seed],
                    metrics={"f_attn": 0.10 + 0.02 * seed, "m_act": 20.0, "train_time_s": 4.0,
                             "attn_mass": 0.7}),
            FakeRun("custom-variant", seed, 5.2, metrics={"train_time_s": 3.0}),
            FakeRun("g1-elementwise", seed, 4.9),
        ]
    fakes.append(FakeRun("g1-ns-sigmoid", 0, 5.5))
    fakes.append(FakeRun("g2-elementwise", 3, 0.0, status="diverged"))
    return frame(fakes).with_columns(pl.col("variant").replace(RENAME))


def _row(table: pl.DataFrame, variant: str) -> dict[str, object]:
    return table.filter(pl.col("variant") == variant).row(0, named=True)


def test_every_variant_gets_its_spec_family_and_an_unknown_one_says_so() -> None:
    got = family_of(pl.Series(["baseline", "g1-elementwise", "switch-v-1-top-1", "sink-token",
                               "no-such-spec"])).to_list()
    assert got == [Family.CONTROLS.value, Family.GATES.value, Family.SWITCH_HEAD.value,
                   Family.SINK_MITIGATIONS.value, UNKNOWN]


def test_rows_are_the_baseline_then_families_in_order_with_seed_means_and_paired_changes(
        ) -> None:
    table = family_table(_runs())
    assert table["variant"].to_list() == ["baseline", "g1-elementwise", "switch-v-4-top-4",
                                          "sink-logit", "no-such-spec"]
    assert table["family"].to_list()[-1] == UNKNOWN
    sink = _row(table, "sink-logit")
    assert (sink["n"], sink["n_diverged"]) == (3, 1)
    assert sink["val_loss"] == pytest.approx(np.mean(SINK))
    assert sink["d_val_loss"] == pytest.approx(np.mean(np.array(SINK) - np.array(BASE)))
    assert sink["d_f_attn"] == pytest.approx(0.12 - 0.41)
    assert sink["p_f_attn"] is not None and sink["p_f_attn"] < 0.05
    assert sink["step_time_ms"] == pytest.approx(1000 * 4.0 / STEPS)
    assert sink["attn_mass"] == pytest.approx(0.7)
    assert _row(table, "baseline")["d_val_loss"] is None  # the reference
    assert _row(table, "switch-v-4-top-4")["gate_score.mean"] == pytest.approx(0.3)


def test_a_family_filter_keeps_the_baseline_as_reference() -> None:
    table = family_table(_runs(), families=[Family.SINK_MITIGATIONS])
    assert table["variant"].to_list() == ["baseline", "sink-logit"]
    assert "attn_mass" in table.columns
    without = family_table(_runs().drop("attn_mass"), families=["SwitchHead"])
    assert without["variant"].to_list() == ["baseline", "switch-v-4-top-4"]
    assert "attn_mass" not in without.columns


def test_the_query_api_gives_the_family_table_of_its_runs(store: Store) -> None:
    runs = dashboards.load("t", tracking_uri=store.uri)
    table = runs.families()
    assert table.height and table.equals(family_table(runs.frame))
    gates = runs.families([Family.GATES])
    assert gates["variant"][0] == "baseline"
    assert set(gates["family"].to_list()) == {Family.CONTROLS.value, Family.GATES.value}
