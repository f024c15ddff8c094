"""Loading from a real SQLite MLflow store: one row per training run, typed columns, the
sweep's runs only, summary and other non-training runs left out, both readers alike."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from synthetic import FakeRun, Store, frame

from gatelab import dashboards
from gatelab.contract import sqlite_path
from gatelab.dashboards.store.columns import FINAL_METRICS


def test_one_row_per_training_run_of_the_sweep(store: Store) -> None:
    runs = dashboards.load("t", tracking_uri=store.uri)
    frame = runs.frame
    assert len(runs) == len(store.sweep_ids) == 6
    assert set(frame["run_id"].to_list()) == set(store.sweep_ids)
    assert frame["run_hash"].n_unique() == frame.height
    left_out = {store.other_sweep_id, store.other_experiment_id, store.summary_id,
                store.no_hash_id, store.deleted_id, store.stale_id}
    assert not left_out & set(frame["run_id"].to_list())


def test_columns_are_typed(store: Store) -> None:
    frame = dashboards.load("t", tracking_uri=store.uri).frame
    schema = frame.schema
    expected = {
        "seed": pl.Int64, "lr": pl.Float64, "status": pl.Utf8, "variant": pl.Utf8,
        "diverged_step": pl.Int64, "sweeps": pl.List(pl.Utf8),
        "start_time": pl.Datetime("ms", "UTC"), "recipe.steps": pl.Int64,
        "recipe.tokens": pl.Int64, "recipe.lr": pl.Float64, "recipe.compile": pl.Boolean,
        "recipe.long_context": pl.Utf8, "backbone.qk_norm": pl.Boolean,
        "backbone.norm_eps": pl.Float64, "backbone.n_layers": pl.Int64,
        "spec.gate.position": pl.Utf8, "spec.gate.init.bias": pl.Float64,
        "spec.capacity.q_heads_mult": pl.Float64, "val_loss": pl.Float64,
        "f_attn.layer01": pl.Float64, "metric.diverged_step": pl.Float64,
    }
    for column, dtype in expected.items():
        assert schema[column] == dtype, column
    for metric in FINAL_METRICS:
        assert schema[metric] == pl.Float64, metric
    for run_id, fake in store.sweep_ids.items():
        row = frame.filter(pl.col("run_id") == run_id).row(0, named=True)
        assert (row["variant"], row["seed"], row["status"]) == (fake.variant, fake.seed,
                                                                 fake.status)
        assert row["sweeps"] == ["t"] and row["recipe.tokens"] is None
        if fake.status == "finished":
            assert row["val_loss"] == pytest.approx(fake.val_loss)
            assert row["val_ppl"] == pytest.approx(math.exp(fake.val_loss))
        else:
            assert row["val_loss"] is None and row["diverged_step"] == 7
        assert row["position"] == (None if fake.variant == "baseline" else "G1")
        assert row["spec.gate.position"] == (None if fake.variant == "baseline" else "G1")
    assert frame["setting_id"].n_unique() == 1
    assert frame["setting"][0] == "tiny, 40 steps, batch 8x64, lr 0.003"


def test_sql_and_client_readers_give_the_same_frame(store: Store) -> None:
    sql = dashboards.load("t", tracking_uri=store.uri, backend="sql").frame
    client = dashboards.load("t", tracking_uri=store.uri, backend="client").frame
    assert_frame_equal(sql, client)


def test_every_run_or_every_experiment(store: Store) -> None:
    all_runs = dashboards.load(None, tracking_uri=store.uri).frame
    assert store.other_sweep_id in all_runs["run_id"].to_list()
    assert store.other_experiment_id not in all_runs["run_id"].to_list()
    everywhere = dashboards.load("t", tracking_uri=store.uri, experiment=None).frame
    assert store.other_experiment_id in everywhere["run_id"].to_list()
    assert set(everywhere["experiment"].to_list()) == {"gatelab", "elsewhere"}


def test_history_on_demand_from_both_readers(store: Store) -> None:
    sql = dashboards.load("t", tracking_uri=store.uri, backend="sql")
    client = dashboards.load("t", tracking_uri=store.uri, backend="client")
    hist = sql.history("val_loss")
    assert_frame_equal(hist, client.history("val_loss"))
    assert set(hist.columns) >= {"run_id", "variant", "seed", "metric", "step", "value"}
    finished = [(rid, f) for rid, f in store.sweep_ids.items() if f.status == "finished"]
    for run_id, fake in finished:
        mine = hist.filter(pl.col("run_id") == run_id).sort("step")
        # The final measurement, logged after the last evaluation at the same step, wins.
        assert mine["step"].to_list() == [fake.steps // 2, fake.steps]
        assert mine["value"].to_list() == pytest.approx([fake.val_loss + 0.5, fake.val_loss])
    both = sql.history(["train_loss", "val_loss"])
    assert set(both["metric"].unique().to_list()) == {"train_loss", "val_loss"}
    assert both.filter(pl.col("metric") == "train_loss").height == 6 * 40


def test_unknown_sweep_gives_an_empty_frame_with_every_column(store: Store) -> None:
    runs = dashboards.load("no-such-sweep", tracking_uri=store.uri)
    assert len(runs) == 0 and "val_loss" in runs.frame.columns
    assert runs.table1().height == 0 and runs.verdicts().height == 0
    assert runs.history("val_loss").height == 0


def test_missing_store_and_uri_parsing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        dashboards.load("t", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///rel/x.db") == Path("rel/x.db")
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_runs_are_grouped_by_the_runners_setting_tags() -> None:
    """Same recipe params, another corpus: the runner's setting hash keeps them apart, where a
    grouping rebuilt from params would pool them; a run recorded before the tags is alone."""
    runs = frame([FakeRun("baseline", 0), FakeRun("baseline", 1), FakeRun("g1-elementwise", 0),
                  FakeRun("baseline", 2, corpus="other"), FakeRun("baseline", 3, legacy=True)])
    by_seed = {row["seed"]: row for row in runs.iter_rows(named=True)}
    assert by_seed[0]["setting_id"] == by_seed[1]["setting_id"]  # the seeds of one setting
    gated = runs.filter(pl.col("variant") == "g1-elementwise").row(0, named=True)
    assert gated["setting_id"] == by_seed[0]["setting_id"]  # variants are compared within it
    assert by_seed[2]["setting_id"] != by_seed[0]["setting_id"]
    assert by_seed[3]["setting_id"] == by_seed[3]["run_hash"]  # never pooled with others
    assert runs["setting"].n_unique() == 3
