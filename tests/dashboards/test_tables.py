"""Tables from synthetic run frames with known answers: seed aggregation, pairing with the
baseline, the paper's columns, ranks, the stability and long-context tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps
from synthetic import FakeRun, frame

from gatelab.dashboards.tables import paper_tables as tables
from gatelab.dashboards.tables.compare import paired_diff, summarise

BASE = [5.00, 5.10, 4.95, 5.05]
GATED = [4.90, 5.02, 4.80, 4.97]


def seeds(variant: str, losses: list[float], lr: float = 3e-3,
          metrics: dict[str, float] | None = None) -> list[FakeRun]:
    return [FakeRun(variant, seed, loss, lr=lr, metrics=dict(metrics or {}))
            for seed, loss in enumerate(losses)]


def row(table: pl.DataFrame, variant: str) -> dict[str, object]:
    return table.filter(pl.col("variant") == variant).row(0, named=True)


def test_summarise_gives_mean_and_t_interval_per_variant() -> None:
    runs = frame(seeds("baseline", BASE) + seeds("g1-elementwise", GATED))
    out = summarise(runs, ["val_loss"])
    assert out.height == 2 and out["n"].to_list() == [4, 4]
    b = row(out, "baseline")
    x = np.array(BASE)
    low, high = sps.t.interval(0.95, 3, loc=x.mean(), scale=sps.sem(x))
    assert b["val_loss"] == pytest.approx(x.mean())
    assert b["val_loss_ci95"] == pytest.approx((high - low) / 2)


def test_paired_diff_pairs_on_setting_and_seed_and_matches_ttest_rel() -> None:
    runs = frame(seeds("baseline", BASE) + seeds("g1-elementwise", GATED)
                 + [FakeRun("g1-elementwise", 9, 4.0)]  # no baseline for seed 9: unpaired
                 + [FakeRun("baseline", 0, 9.9, lr=0.01)])  # another setting: never paired
    out = paired_diff(runs, "val_loss")
    assert out.height == 1
    r = out.row(0, named=True)
    assert r["n_pairs"] == 4
    assert r["diff"] == pytest.approx(np.mean(np.array(GATED) - np.array(BASE)))
    assert r["p_value"] == pytest.approx(float(sps.ttest_rel(GATED, BASE).pvalue), rel=1e-9)
    assert r["note"] is None


def test_one_seed_gives_null_p_and_a_note() -> None:
    out = paired_diff(frame(seeds("baseline", [5.0]) + seeds("g1-elementwise", [4.9])),
                      "val_loss")
    r = out.row(0, named=True)
    assert r["n_pairs"] == 1 and r["diff"] == pytest.approx(-0.1)
    assert r["p_value"] is None and r["diff_ci95"] is None and "n=1" in r["note"]


def test_table1_shape_and_numbers() -> None:
    runs = frame(seeds("baseline", BASE) + seeds("g1-elementwise", GATED)
                 + seeds("g1-headwise", [4.95, 5.06, 4.9, 5.0])
                 + [FakeRun("g1-headwise", 4, status="diverged")])
    t1 = tables.table1(runs)
    assert t1["variant"].to_list() == ["baseline", "g1-elementwise", "g1-headwise"]
    b, g, h = row(t1, "baseline"), row(t1, "g1-elementwise"), row(t1, "g1-headwise")
    assert b["note"] == "reference" and b["d_val_ppl"] is None and b["added_params"] == 0
    assert g["added_params"] == 64 and g["paper_added_params_m"] == 201.0
    ppl_b, ppl_g = np.exp(BASE), np.exp(GATED)
    assert g["val_ppl"] == pytest.approx(ppl_g.mean())
    assert g["d_val_ppl"] == pytest.approx((ppl_g - ppl_b).mean())
    assert g["p_val_ppl"] == pytest.approx(float(sps.ttest_rel(ppl_g, ppl_b).pvalue), rel=1e-9)
    assert g["paper_ppl"] == 5.761 and g["paper_d_ppl"] == pytest.approx(5.761 - 6.026)
    assert b["paper_ppl"] == 6.026
    assert h["n"] == 4 and h["n_diverged"] == 1  # the diverged run is counted, not averaged
    # Our order (elementwise < headwise < baseline) is the paper's: ranks 1, 2, 3.
    assert [g["rank"], h["rank"], b["rank"]] == [1.0, 2.0, 3.0]
    assert [g["paper_rank"], h["paper_rank"], b["paper_rank"]] == [1.0, 2.0, 3.0]
    agreement = tables.rank_agreement(runs).row(0, named=True)
    assert agreement["spearman_rho"] == pytest.approx(1.0)
    assert agreement["p_value"] == pytest.approx(1 / 3) and agreement["n_variants"] == 3


def test_tables_keep_settings_apart() -> None:
    runs = frame(seeds("baseline", BASE) + seeds("g1-elementwise", GATED)
                 + seeds("baseline", [6.0, 6.1], lr=0.03)
                 + seeds("g1-elementwise", [5.0, 5.2], lr=0.03))
    t1 = tables.table1(runs)
    assert t1.height == 4
    assert sorted(t1["lr"].unique().to_list()) == [0.003, 0.03]
    high = t1.filter((pl.col("lr") == 0.03) & (pl.col("variant") == "g1-elementwise"))
    assert high["n_pairs"][0] == 2
    assert high["d_val_ppl"][0] == pytest.approx(np.mean(np.exp([5.0, 5.2]) - np.exp([6.0, 6.1])))


def test_table4_stability_and_long_context() -> None:
    runs = frame(seeds("baseline", BASE, metrics={"f_attn": 0.5, "m_act": 80.0})
                 + [FakeRun("g1-elementwise", s, v, metrics={"f_attn": 0.1 + 0.01 * s,
                                                              "m_act": 20.0})
                    for s, v in enumerate(GATED)]
                 + [FakeRun("g1-elementwise", 7, status="diverged",
                            metrics={"max_grad_norm": 50.0})])
    t4 = tables.table4(runs)
    g = row(t4, "g1-elementwise")
    assert g["gate_score.mean"] == pytest.approx(0.3) and g["paper_gate_score"] == 0.116
    assert g["d_f_attn"] == pytest.approx(np.mean([0.1, 0.11, 0.12, 0.13]) - 0.5)
    assert g["d_m_act"] == pytest.approx(-60.0) and g["p_m_act"] is None  # zero spread
    assert row(t4, "baseline")["gate_score.mean"] is None
    st = tables.stability(runs)
    gs = row(st, "g1-elementwise")
    assert gs["diverged"] == "1/5" and gs["n_diverged"] == 1 and gs["first_diverged_step"] == 7
    assert gs["max_grad_norm_max"] == 50.0
    assert gs["max_grad_norm"] == pytest.approx((4 * 2.0 + 50.0) / 5)
    lc = tables.long_context(runs)
    lg = row(lc, "g1-elementwise")
    assert lg["ctx4x_gap"] == pytest.approx(0.3)
    assert lg["val_loss_ctx4x"] == pytest.approx(np.mean(GATED) + 0.3)
    assert lg["d_ctx4x_gap"] == pytest.approx(0.0, abs=1e-9)


def test_tables_of_no_runs_are_empty_not_errors() -> None:
    empty = frame([])
    for make in (tables.table1, tables.table4, tables.stability, tables.long_context,
                 tables.rank_agreement):
        assert make(empty).height == 0


def test_unknown_variant_has_no_paper_numbers() -> None:
    runs = frame(seeds("baseline", BASE) + seeds("custom-variant", GATED))
    c = row(tables.table1(runs), "custom-variant")
    assert c["paper_ppl"] is None and c["paper_row"] is None and c["rank"] is None
    assert c["val_ppl"] == pytest.approx(float(np.mean(np.exp(GATED))))
