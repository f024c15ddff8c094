"""The metric names' rules and their parsers, and the typed summary of a run: each name a rule
builds parses back to what built it, any other name to ``None``; a summary's metrics survive
the trip through MLflow's names, and a name that is not a summary's is refused."""

from __future__ import annotations

import pickle

import pytest

from gatelab.metrics import (
    PER_LAYER,
    READ_BY,
    Metric,
    Reader,
    Rule,
    context_metric,
    is_declared,
    layer_metric,
    parse_context_metric,
    parse_layer_metric,
    parse_position_metric,
    position_metric,
)
from gatelab.run_summary import RunSummary, SummaryError

REQUIRED = {"steps": 40, "tokens": 20480, "params": 123456, "vocab_size": 4096,
            "loss_spikes": 1, "spike_score": 0.25, "max_grad_norm": 3.5, "train_time_s": 12.0}
"""A summary's required metrics, as a run logs them."""


def test_the_names_are_those_recorded_runs_hold() -> None:
    """Renaming one would leave every recorded run unread: these are byte for byte the names
    in the committed findings."""
    assert layer_metric(Metric.F_ATTN, 3) == "f_attn.layer03"
    assert (layer_metric(Metric.GATE_SCORE_FRAC_BELOW_001, 11)
            == "gate_score.frac_below_0.01.layer11")
    assert context_metric(4) == "val_loss_ctx4x"
    assert position_metric(2, 7) == "val_loss_ctx2x.pos7"
    assert Metric.GATE_SCORE_MEAN == "gate_score.mean" and Metric.VAL_BPB == "val_bpb"


@pytest.mark.parametrize("metric", sorted(PER_LAYER))
def test_a_per_layer_name_parses_back(metric: Metric) -> None:
    for layer in (0, 9, 10, 123):
        assert parse_layer_metric(layer_metric(metric, layer)) == (metric, layer)


def test_names_of_no_rule_parse_to_none() -> None:
    for name in ("val_loss.layer03", "f_attn.layer", "f_attn.layerx1", "train_loss", "f_attn"):
        assert parse_layer_metric(name) is None, name
    for name in ("val_loss_ctx4x.pos1", "val_loss_ctxx", "val_loss_ctx4", "train_loss_ctx4x"):
        assert parse_context_metric(name) is None, name
    for name in ("val_loss_ctx4x", "val_loss_ctx4x.pos", "val_loss_ctx4x.layer01"):
        assert parse_position_metric(name) is None, name
    assert parse_context_metric(context_metric(16)) == 16
    assert parse_position_metric(position_metric(16, 3)) == (16, 3)


def test_declared_names_are_the_members_and_what_the_rules_build() -> None:
    assert all(is_declared(m) for m in Metric)
    assert is_declared("sink_head_max.layer07") and is_declared("val_loss_ctx8x.pos0")
    assert not is_declared("loss") and not is_declared("system/cpu_utilization_percentage")
    assert not is_declared("val_ppl.layer00")  # not a per-layer metric


def test_every_metric_and_rule_has_a_reader() -> None:
    assert set(READ_BY) == set(Metric) | set(Rule)
    assert all(READ_BY[name] for name in READ_BY)
    assert {r for readers in READ_BY.values() for r in readers} == set(Reader)


def test_a_summary_round_trips_through_its_metrics() -> None:
    metrics = {**REQUIRED, "val_loss": 3.1, "val_ppl": 22.2, "gate_score.mean": 0.3,
               "gate_score.frac_below_0.1": 0.4, "f_attn.layer01": 0.2, "val_loss_ctx2x": 3.4,
               "val_loss_ctx2x.pos1": 3.6, "peak_rss_gb": 1.5}
    summary = RunSummary.from_metrics(metrics)
    assert summary.val_loss == 3.1 and summary.gate_score_mean == 0.3
    assert summary.gate_score_frac_below_01 == 0.4 and summary.gate_score_frac_below_001 is None
    assert summary.steps == 40 and isinstance(summary.steps, int)
    assert dict(summary.named) == {"f_attn.layer01": 0.2, "val_loss_ctx2x": 3.4,
                                   "val_loss_ctx2x.pos1": 3.6}
    assert summary.to_metrics() == {k: float(v) for k, v in metrics.items()}
    assert RunSummary.from_metrics(summary.to_metrics()) == summary
    assert pickle.loads(pickle.dumps(summary)) == summary  # it crosses the Ray boundary


def test_a_recorded_runs_floats_become_its_integers() -> None:
    recorded = {k: float(v) for k, v in REQUIRED.items()} | {"diverged_step": 17.0}
    summary = RunSummary.from_metrics(recorded, divergence="non-finite loss (nan) at step 17")
    assert summary.diverged_step == 17 and isinstance(summary.diverged_step, int)
    assert summary.as_dict()["divergence"] == "non-finite loss (nan) at step 17"
    assert summary.as_dict()["loss_spikes"] == 1 and "val_loss" not in summary.as_dict()


def test_a_name_that_is_not_a_summarys_is_refused_or_left_out() -> None:
    beside = {**REQUIRED, "train_loss": 2.0, "lr": 1e-4, "system/cpu_utilization_percentage": 9}
    with pytest.raises(SummaryError, match="'train_loss' is not a metric of a run's summary"):
        RunSummary.from_metrics(beside)
    recorded = RunSummary.from_metrics(beside, strict=False)  # a recorded run's latest metrics
    assert recorded.to_metrics() == {k: float(v) for k, v in REQUIRED.items()}
    with pytest.raises(SummaryError, match=r"\['tokens'\] are missing"):
        RunSummary.from_metrics({k: v for k, v in REQUIRED.items() if k != "tokens"})
