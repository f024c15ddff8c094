"""LR tolerance (diverged counting, best and largest stable LR) and the verdicts on the
paper's claims, from synthetic runs whose answers are known."""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import pytest
from synthetic import FakeRun, frame

from gatelab.dashboards.stats.inference import holm
from gatelab.dashboards.stats.power import mde, seeds_needed
from gatelab.dashboards.tables.lr_tolerance import (
    lr_grid,
    lr_summary,
    lr_tolerance,
    massive_activations_per_lr,
)
from gatelab.dashboards.verdicts.procedure import untested, verdicts
from gatelab.verdict import Verdict

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
    assert v["verdict"] == Verdict.REPRODUCED and v["n"] == 5
    assert v["estimate"] == pytest.approx(-0.05, abs=0.002) and v["p_value"] < 0.001
    assert "paired t-test" in str(v["statistic"])
    sink = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "sink-removed")
    assert sink["verdict"] == Verdict.REPRODUCED


def test_a_clear_loss_is_not_reproduced() -> None:
    verdict = verdict_of(paired_runs(+0.05, 5), "gate-lowers-loss")["verdict"]
    assert verdict == Verdict.NOT_REPRODUCED


def test_one_seed_is_inconclusive_whatever_the_effect() -> None:
    table = verdicts(frame(paired_runs(-0.5, 1, f_attn=0.01, m_act=1.0) + [
        FakeRun("g1-headwise", 0, 4.6)]))
    assert set(table["verdict"].to_list()) == {Verdict.INCONCLUSIVE}
    gain = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert gain["p_value"] is None and "n=1" in str(gain["note"])


def test_small_noisy_effects_are_inconclusive() -> None:
    runs = ([FakeRun("baseline", s, v) for s, v in enumerate([5.0, 5.2, 4.9])]
            + [FakeRun("g1-elementwise", s, v) for s, v in enumerate([5.1, 5.0, 4.95])])
    assert verdict_of(runs, "gate-lowers-loss")["verdict"] == Verdict.INCONCLUSIVE


def test_no_sink_in_the_baseline_makes_the_sink_claim_inconclusive() -> None:
    runs = ([FakeRun("baseline", s, 5.0, metrics={"f_attn": 0.06 + 0.001 * s})
             for s in range(5)]
            + [FakeRun("g1-elementwise", s, 4.9, metrics={"f_attn": 0.03 + 0.002 * s})
               for s in range(5)])
    v = verdict_of(runs, "sink-removed")
    assert v["estimate"] < 1 and v["p_value"] < 0.05  # significant, yet there is no sink
    assert v["verdict"] == Verdict.INCONCLUSIVE and "no attention sink" in str(v["note"])


def test_the_sink_precondition_is_measured_per_head() -> None:
    """A mean f_attn far below 0.2 with one head at 0.6 is a sink (Gu et al. 2024's
    per-head reading); the same mean with no head above 0.3 is not."""
    def runs(head: float) -> list[FakeRun]:
        return ([FakeRun("baseline", s, 5.0, metrics={"f_attn": 0.06 + 0.001 * s,
                                                      "sink_head_max": head + 0.01 * s})
                 for s in range(5)]
                + [FakeRun("g1-elementwise", s, 4.9, metrics={"f_attn": 0.03 + 0.002 * s,
                                                              "sink_head_max": 0.1})
                   for s in range(5)])
    assert verdict_of(runs(0.6), "sink-removed")["verdict"] == Verdict.REPRODUCED
    flat = verdict_of(runs(0.2), "sink-removed")
    assert flat["verdict"] == Verdict.INCONCLUSIVE
    assert "largest head puts 0.220" in str(flat["note"])


def test_headwise_keeps_most_of_the_gain() -> None:
    base = [FakeRun("baseline", s, 5.0 + 0.05 * s) for s in range(5)]
    noise = [0.0, 0.002, -0.002, 0.001, -0.001]
    elem = [FakeRun("g1-elementwise", s, 5.0 + 0.05 * s - 0.10 + noise[s]) for s in range(5)]
    keeps = [FakeRun("g1-headwise", s, 5.0 + 0.05 * s - 0.09 - noise[s]) for s in range(5)]
    loses = [FakeRun("g1-headwise", s, 5.0 + 0.05 * s - 0.01 - noise[s]) for s in range(5)]
    v = verdict_of(base + elem + keeps, "headwise-keeps-gain")
    assert v["verdict"] == Verdict.REPRODUCED and v["estimate"] == pytest.approx(0.9, abs=0.03)
    v = verdict_of(base + elem + loses, "headwise-keeps-gain")
    assert v["verdict"] == Verdict.NOT_REPRODUCED and v["estimate"] == pytest.approx(0.1, abs=0.03)


def test_larger_stable_lr_needs_enough_seeds() -> None:
    three = verdict_of(grid_runs(3), "larger-stable-lr")
    assert three["estimate"] == pytest.approx(10.0)
    # At 1e-2 the baseline diverged 1/3 and the gate 0/3: Fisher p = 0.5, not enough.
    assert three["verdict"] == Verdict.INCONCLUSIVE and three["p_value"] == pytest.approx(0.5)
    many = [FakeRun("baseline", s, 5.0, lr=1e-3) for s in range(6)] + [
        FakeRun("baseline", s, lr=1e-2, status="diverged") for s in range(6)] + [
        FakeRun("g1-elementwise", s, 4.9, lr=lr) for s in range(6) for lr in (1e-3, 1e-2)]
    v = verdict_of(many, "larger-stable-lr")
    assert v["verdict"] == Verdict.REPRODUCED and v["p_value"] == pytest.approx(1 / 924)


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
    assert v["verdict"] == Verdict.INCONCLUSIVE and v["p_value"] > 0.05
    assert v["mde"] == pytest.approx(mde(sd, 4)) and v["mde"] > abs(v["estimate"])
    assert v["seeds_needed"] == seeds_needed(-0.02, sd) and v["seeds_needed"] > 4
    assert v["power_note"] is None
    assert str(v["statistic"]).endswith(
        f"; would take about {v['seeds_needed']} seeds (80% power at α = 0.05); detectable "
        f"now: {v['mde']:.2g} nats")


def test_a_decided_claim_keeps_its_power_numbers_out_of_the_statistic() -> None:
    v = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "gate-lowers-loss")
    assert v["verdict"] == Verdict.REPRODUCED
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
    v = verdict_of(runs, "gate-scores-below-half")
    sd = float(np.std(scores, ddof=1))
    # Two level claims are tested on these runs (against 0.5 and 0.2): power at 0.05 / 2.
    assert v["verdict"] == Verdict.INCONCLUSIVE
    assert v["mde"] == pytest.approx(mde(sd, 4, alpha=0.025))
    assert v["seeds_needed"] == seeds_needed(float(np.mean(scores)) - 0.5, sd, alpha=0.025)


def _gain(variant: str, delta: float, n: int = 5, lr: float = 3e-3,
          metrics: dict[str, list[float]] | None = None) -> list[FakeRun]:
    noise = np.random.default_rng(zlib.crc32(f"{variant}{lr}".encode())).normal(0, 0.003, n)
    return [FakeRun(variant, s, 5.0 + 0.05 * s + delta + float(noise[s]), lr=lr,
                    metrics={k: v[s] for k, v in (metrics or {}).items()}) for s in range(n)]


def test_a_control_that_gains_as_much_stops_a_plain_reproduced() -> None:
    """The scale control (no parameters, no input) gains as much as the gate: the gain is
    established but not the gate's; a control that gains nothing leaves "reproduced"."""
    base, gate = _gain("baseline", 0.0), _gain("g1-elementwise", -0.05)
    confounded = verdict_of(base + gate + _gain("sdpa-scale", -0.05), "gate-lowers-loss")
    assert confounded["verdict"] == Verdict.CONFOUNDED
    assert "does not beat sdpa-scale" in str(confounded["controls"])
    assert "sdpa-scale" in str(confounded["note"])
    clean = verdict_of(base + gate + _gain("sdpa-scale", 0.0), "gate-lowers-loss")
    assert clean["verdict"] == Verdict.REPRODUCED and "beats sdpa-scale" in str(clean["controls"])
    # The mechanism claim compares the two directly.
    direct = verdict_of(base + gate + _gain("sdpa-scale", -0.05), "gate-beats-scale-control")
    assert direct["comparison"] == "g1-elementwise vs sdpa-scale: val_loss"
    assert direct["verdict"] == Verdict.INCONCLUSIVE


def test_an_lr_grid_gives_a_verdict_per_lr_and_at_the_best_lr_never_pooled() -> None:
    """The gate helps at one LR and hurts at the other: pooling the two as extra seeds
    would read ~0; per LR, each is decided."""
    runs = (_gain("baseline", 0.0, lr=1e-3) + _gain("g1-elementwise", -0.06, lr=1e-3)
            + _gain("baseline", -0.2, lr=1e-2) + _gain("g1-elementwise", -0.14, lr=1e-2))
    table = verdicts(frame(runs)).filter(pl.col("claim") == "gate-lowers-loss")
    by_at = {r["at"]: r for r in table.iter_rows(named=True)}
    assert set(by_at) == {"lr 0.001", "lr 0.01", "best LR"}
    assert by_at["lr 0.001"]["verdict"] == Verdict.REPRODUCED and by_at["lr 0.001"]["lr"] == 1e-3
    assert by_at["lr 0.01"]["verdict"] == Verdict.NOT_REPRODUCED
    assert all(r["n"] == 5 for r in by_at.values())  # 5 pairs each, never 10
    # Both best at 1e-2: the gate's -0.14 against the baseline's -0.2.
    assert by_at["best LR"]["estimate"] == pytest.approx(0.06, abs=0.005)


def test_multiplicative_quantities_are_compared_as_log_ratios() -> None:
    """m_act spanning 10 to 45,000 over seeds: the gate halves it on every seed. A raw
    difference is dominated by the largest run; the log-ratio reads 0.5 with a tight
    interval."""
    m_base = [10.0, 300.0, 45_000.0, 80.0, 2_000.0]
    runs = (_gain("baseline", 0.0, metrics={"m_act": m_base})
            + _gain("g1-elementwise", -0.05,
                    metrics={"m_act": [m * 0.5 * (1 + 0.01 * i) for i, m in enumerate(m_base)]}))
    v = verdict_of(runs, "massive-activations-lower")
    assert v["scale"] == "ratio" and v["estimate"] == pytest.approx(0.51, abs=0.01)
    assert v["ci_low"] < v["estimate"] < v["ci_high"] < 0.6
    assert v["verdict"] == Verdict.REPRODUCED and "m_act ratio 0.51" in str(v["statistic"])


def test_holm_corrects_for_the_claims_tested_together() -> None:
    """Holm's step-down: the smallest of m p-values is multiplied by m, the next by m - 1
    (never below the previous), capped at 1; a missing test stays missing."""
    adjusted = holm([0.01, None, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, None, 0.09, 0.09, 0.5])  # type: ignore[arg-type]
    v = verdict_of(paired_runs(-0.05, 5, f_attn=0.1, m_act=20.0), "gate-lowers-loss")
    assert v["p_adjusted"] >= v["p_value"] and "Holm" in str(v["procedure"])


def test_lr_tolerance_reads_degradation_as_well_as_divergence() -> None:
    """No run diverges; the baseline's loss degrades by 0.5 nats at 1e-1 while the gate's
    stays within the margin: the claim is decided on the loss at that LR."""
    runs = (_gain("baseline", 0.0, lr=1e-3) + _gain("baseline", -0.1, lr=1e-2)
            + _gain("baseline", 0.4, lr=1e-1)
            + _gain("g1-elementwise", 0.0, lr=1e-3) + _gain("g1-elementwise", -0.12, lr=1e-2)
            + _gain("g1-elementwise", -0.08, lr=1e-1))
    summary = lr_summary(frame(runs))
    assert cell(summary, "baseline", "degraded_lr") == 1e-1
    assert cell(summary, "baseline", "largest_within_margin_lr") == 1e-2
    assert cell(summary, "g1-elementwise", "largest_within_margin_lr") == 1e-1
    assert cell(summary, "g1-elementwise", "tolerance_ratio") == pytest.approx(10.0)
    v = verdict_of(runs, "larger-stable-lr")
    assert v["verdict"] == Verdict.REPRODUCED and "degrades from LR 0.1" in str(v["statistic"])


def test_massive_activations_per_lr() -> None:
    runs = (_gain("baseline", 0.0, lr=1e-3, metrics={"m_act": [10.0] * 5})
            + _gain("baseline", 0.0, lr=1e-1, metrics={"m_act": [5_000.0] * 5}))
    table = massive_activations_per_lr(frame(runs))
    row = table.row(0, named=True)
    assert row["m_act@lr=0.001"] == 10.0 and row["m_act@lr=0.1"] == 5_000.0
    assert row["growth"] == pytest.approx(500.0)
