"""LR tolerance (diverged counting, best and largest stable LR) and the verdicts on the
paper's claims, from synthetic runs whose answers are known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from synthetic import FakeRun, frame

from gatelab.dashboards.lr_tolerance import lr_grid, lr_summary, lr_tolerance
from gatelab.dashboards.stats import mde, seeds_needed
from gatelab.dashboards.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, untested, verdicts

LRS = (1e-3, 1e-2, 1e-1)


def grid_runs(n_seeds: int = 3) -> list[FakeRun]:
    """Baseline: fine at 1e-3, diverges 1/3 at 1e-2 and 3/3 at 1e-1. Gated: stable up to
    1e-2, diverges 2/3 at 1e-1."""
    runs = []
    for s in range(n_seeds):
        runs += [FakeRun("baseline", s, 5.0 + 0.01 * s, lr=1e-3),
                 FakeRun("baseline", s, 4.8 + 0.01 * s, lr=1e-2,
                         status="diverged" if s == 0 else "finished"),
                 FakeRun("baseline", s, lr=1e-1, status="diverged"),
                 FakeRun("g1-elementwise", s, 4.9 + 0.01 * s, lr=1e-3),
                 FakeRun("g1-elementwise", s, 4.6 + 0.01 * s, lr=1e-2),
                 FakeRun("g1-elementwise", s, 4.7, lr=1e-1,
                         status="finished" if s == 0 else "diverged")]
    return runs


def cell(table: pl.DataFrame, variant: str, column: str) -> object:
    return table.filter(pl.col("variant") == variant)[column][0]


def test_lr_grid_counts_divergences_per_variant_and_lr() -> None:
    grid = lr_grid(frame(grid_runs()))
    assert grid.height == 6
    b = grid.filter(pl.col("variant") == "baseline").sort("lr")
    assert b["n"].to_list() == [3, 2, 0] and b["n_diverged"].to_list() == [0, 1, 3]
    assert b["cell"][2] == "diverged 3/3"
    assert b["cell"][1].endswith("(diverged 1/3)") and b["cell"][1].startswith("4.815 ± ")
    assert b["val_loss"][1] == pytest.approx(4.815)


def test_best_and_largest_stable_lr_and_ratio() -> None:
    summary = lr_summary(frame(grid_runs()))
    assert cell(summary, "baseline", "largest_stable_lr") == 1e-3
    assert cell(summary, "baseline", "smallest_diverging_lr") == 1e-2
    assert cell(summary, "baseline", "best_lr") == 1e-2  # lowest mean loss among finished
    assert cell(summary, "g1-elementwise", "largest_stable_lr") == 1e-2
    assert cell(summary, "g1-elementwise", "stable_lr_ratio") == pytest.approx(10.0)
    assert cell(summary, "baseline", "stable_lr_ratio") == pytest.approx(1.0)
    wide = lr_tolerance(frame(grid_runs()))
    assert [c for c in wide.columns if c.startswith("lr=")] == ["lr=0.001", "lr=0.01", "lr=0.1"]
    assert cell(wide, "g1-elementwise", "lr=0.1") == "4.700 (diverged 2/3)"
    assert wide["variant"][0] == "baseline"


def test_lr_summary_notes() -> None:
    one_lr = lr_summary(frame([FakeRun("baseline", 0)]))
    assert "one learning rate" in str(one_lr["note"][0])
    stable = lr_summary(frame([FakeRun("baseline", 0, lr=1e-3), FakeRun("baseline", 0, lr=1e-2)]))
    assert "stable at every LR" in str(stable["note"][0])


def verdict_of(runs: list[FakeRun], claim: str) -> dict[str, object]:
    table = verdicts(frame(runs))
    return table.filter(pl.col("claim") == claim).row(0, named=True)


def paired_runs(delta: float, n: int, **metrics: float) -> list[FakeRun]:
    noise = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003, -0.002, 0.001][:n]
    return ([FakeRun("baseline", s, 5.0 + 0.05 * s, metrics={"f_attn": 0.45, "m_act": 90.0})
             for s in range(n)]
            + [FakeRun("g1-elementwise", s, 5.0 + 0.05 * s + delta + noise[s],
                       metrics={k: v + noise[s] for k, v in metrics.items()})
               for s in range(n)])


def test_a_clear_gain_on_several_seeds_is_reproduced() -> None:
    v = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "gate-lowers-loss")
    assert v["verdict"] == REPRODUCED and v["n"] == 5
    assert v["estimate"] == pytest.approx(-0.05, abs=0.002) and v["p_value"] < 0.001
    assert "paired t-test" in str(v["statistic"])
    sink = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "sink-removed")
    assert sink["verdict"] == REPRODUCED


def test_a_clear_loss_is_not_reproduced() -> None:
    assert verdict_of(paired_runs(+0.05, 5), "gate-lowers-loss")["verdict"] == NOT_REPRODUCED


def test_one_seed_is_inconclusive_whatever_the_effect() -> None:
    table = verdicts(frame(paired_runs(-0.5, 1, f_attn=0.01, m_act=1.0) + [
        FakeRun("g1-headwise", 0, 4.6)]))
    assert set(table["verdict"].to_list()) == {INCONCLUSIVE}
    gain = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert gain["p_value"] is None and "n=1" in str(gain["note"])


def test_small_noisy_effects_are_inconclusive() -> None:
    runs = ([FakeRun("baseline", s, v) for s, v in enumerate([5.0, 5.2, 4.9])]
            + [FakeRun("g1-elementwise", s, v) for s, v in enumerate([5.1, 5.0, 4.95])])
    assert verdict_of(runs, "gate-lowers-loss")["verdict"] == INCONCLUSIVE


def test_no_sink_in_the_baseline_makes_the_sink_claim_inconclusive() -> None:
    runs = ([FakeRun("baseline", s, 5.0, metrics={"f_attn": 0.06 + 0.001 * s})
             for s in range(5)]
            + [FakeRun("g1-elementwise", s, 4.9, metrics={"f_attn": 0.03 + 0.002 * s})
               for s in range(5)])
    v = verdict_of(runs, "sink-removed")
    assert v["estimate"] < 0 and v["p_value"] < 0.05  # significant, yet there is no sink
    assert v["verdict"] == INCONCLUSIVE and "no attention sink" in str(v["note"])


def test_headwise_keeps_most_of_the_gain() -> None:
    base = [FakeRun("baseline", s, 5.0 + 0.05 * s) for s in range(5)]
    noise = [0.0, 0.002, -0.002, 0.001, -0.001]
    elem = [FakeRun("g1-elementwise", s, 5.0 + 0.05 * s - 0.10 + noise[s]) for s in range(5)]
    keeps = [FakeRun("g1-headwise", s, 5.0 + 0.05 * s - 0.09 - noise[s]) for s in range(5)]
    loses = [FakeRun("g1-headwise", s, 5.0 + 0.05 * s - 0.01 - noise[s]) for s in range(5)]
    v = verdict_of(base + elem + keeps, "headwise-keeps-gain")
    assert v["verdict"] == REPRODUCED and v["estimate"] == pytest.approx(0.9, abs=0.03)
    v = verdict_of(base + elem + loses, "headwise-keeps-gain")
    assert v["verdict"] == NOT_REPRODUCED and v["estimate"] == pytest.approx(0.1, abs=0.03)


def test_larger_stable_lr_needs_enough_seeds() -> None:
    three = verdict_of(grid_runs(3), "larger-stable-lr")
    assert three["estimate"] == pytest.approx(10.0)
    # At 1e-2 the baseline diverged 1/3 and the gate 0/3: Fisher p = 0.5, not enough.
    assert three["verdict"] == INCONCLUSIVE and three["p_value"] == pytest.approx(0.5)
    many = [FakeRun("baseline", s, 5.0, lr=1e-3) for s in range(6)] + [
        FakeRun("baseline", s, lr=1e-2, status="diverged") for s in range(6)] + [
        FakeRun("g1-elementwise", s, 4.9, lr=lr) for s in range(6) for lr in (1e-3, 1e-2)]
    v = verdict_of(many, "larger-stable-lr")
    assert v["verdict"] == REPRODUCED and v["p_value"] == pytest.approx(1 / 924)


def test_untested_claims_are_listed_not_judged() -> None:
    runs = frame(paired_runs(-0.05, 3))
    table = verdicts(runs)
    assert "g2-lowers-loss" not in table["claim"].to_list()
    assert "g2-lowers-loss" in untested(runs)
    assert "gate-lowers-loss" not in untested(runs)


def test_an_inconclusive_claim_says_how_many_seeds_would_decide_it() -> None:
    runs = ([FakeRun("baseline", s, v) for s, v in enumerate([5.0, 5.2, 4.9, 5.1])]
            + [FakeRun("g1-elementwise", s, v) for s, v in enumerate([4.98, 5.14, 4.95, 5.05])])
    v = verdict_of(runs, "gate-lowers-loss")
    # Differences -0.02, -0.06, +0.05, -0.05: mean -0.02, sd 0.0523 over 4 pairs.
    sd = float(np.std([-0.02, -0.06, 0.05, -0.05], ddof=1))
    assert v["verdict"] == INCONCLUSIVE and v["p_value"] > 0.05
    assert v["mde"] == pytest.approx(mde(sd, 4)) and v["mde"] > abs(v["estimate"])
    assert v["seeds_needed"] == seeds_needed(-0.02, sd) and v["seeds_needed"] > 4
    assert v["power_note"] is None
    assert str(v["statistic"]).endswith(
        f"; would take about {v['seeds_needed']} seeds (80% power); detectable now: "
        f"{v['mde']:.2g} nats")


def test_a_decided_claim_keeps_its_power_numbers_out_of_the_statistic() -> None:
    v = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "gate-lowers-loss")
    assert v["verdict"] == REPRODUCED
    assert isinstance(v["mde"], float) and 0 < v["mde"] < abs(v["estimate"])
    assert isinstance(v["seeds_needed"], int) and 2 <= v["seeds_needed"] <= 5
    assert "would take" not in str(v["statistic"]) and "detectable" not in str(v["statistic"])


def test_power_columns_are_typed_and_say_why_a_number_is_missing() -> None:
    one = verdicts(frame(paired_runs(-0.5, 1, f_attn=0.01, m_act=1.0)))
    assert one.schema["mde"] == pl.Float64 and one.schema["seeds_needed"] == pl.Int64
    assert one.schema["power_note"] == pl.Utf8
    gain = one.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert gain["mde"] is None and gain["seeds_needed"] is None
    assert gain["power_note"] == "needs at least 2 seeds to measure the spread"
    assert str(gain["statistic"]).endswith("; power: needs at least 2 seeds to measure the spread")
    lr = verdict_of(grid_runs(3), "larger-stable-lr")
    assert lr["mde"] is None and "Fisher" in str(lr["power_note"])
    assert "no power computed" in str(lr["statistic"])


def test_the_one_sample_gate_score_claim_has_power_against_half() -> None:
    scores = [0.46, 0.52, 0.44, 0.49]
    runs = [FakeRun("g1-elementwise", s, metrics={"gate_score.mean": g})
            for s, g in enumerate(scores)]
    v = verdict_of(runs, "gate-scores-sparse")
    sd = float(np.std(scores, ddof=1))
    assert v["verdict"] == INCONCLUSIVE and v["mde"] == pytest.approx(mde(sd, 4))
    assert v["seeds_needed"] == seeds_needed(float(np.mean(scores)) - 0.5, sd)
