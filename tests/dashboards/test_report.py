"""The report folder (Markdown, CSV, PNG, one self-contained HTML file), its summary run in
MLflow (never loaded back as a training run), and the plots."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from synthetic import FakeRun, Store, frame

from gatelab import dashboards
from gatelab.dashboards.report import plots
from gatelab.dashboards.report.summary_run import attach
from gatelab.dashboards.report.write import write_report
from gatelab.dashboards.store.artifacts import RunArrays
from gatelab.verdict import Verdict

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_report_files_and_self_contained_html(store: Store, tmp_path: Path) -> None:
    runs = dashboards.load("t", tracking_uri=store.uri)
    report = write_report(runs, tmp_path / "out")
    names = {p.relative_to(report.out).as_posix() for p in report.files}
    assert {"report.html", "report.md", "runs.parquet", "tables/table1.csv",
            "tables/verdicts.csv", "tables/lr_tolerance.csv", "plots/loss_curves.png",
            "plots/internals_per_layer.png", "plots/gate_scores.png"} <= names
    assert "plots/loss_vs_lr.png" not in names  # one LR: nothing to plot against
    for plot in report.plots:
        assert plot.path.read_bytes().startswith(PNG)
    html = report.html_path.read_text()
    assert "<script" not in html and not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    assert len(images) == len(report.headline) + len(report.plots) and all(
        src.startswith("data:image/png;base64,") for src in images)
    assert [p.key for p in report.headline][:1] == ["effects_forest"]
    assert html.index("effects_forest") < html.index("id=\"verdict-sentences\"") < html.index(
        "id=\"table1\"")
    verdicts = report.table("verdicts")["verdict"].to_list()  # coloured by the Verdict's class
    assert verdicts and all(f'<li class="{Verdict(v).css_class}">' in html for v in verdicts)
    assert html.count('<td class="v-') == len(verdicts)
    assert all(f"td.{v.css_class}, li.{v.css_class} {{ background" in html for v in Verdict)
    empty = sum(1 for t in report.tables if t.frame.is_empty())
    assert html.count("<table") == len(report.tables) - empty  # an empty one says "no rows"
    assert html.count("<em>no rows</em>") == empty
    md = report.markdown_path.read_text()
    assert "## Table 1: perplexity against the baseline" in md and "](plots/loss_curves.png)" in md
    assert md.index("## The answer") < md.index("## Verdicts") < md.index("## Table 1")
    assert runs.arrays() == {}  # synthetic runs log no internals.npz: said, not drawn
    assert "have no internals.npz artifact" in md and "attention_maps.png" not in names
    t1 = pl.read_csv(report.out / "tables" / "table1.csv")
    assert t1.columns == report.table("table1").columns
    assert pl.read_parquet(report.out / "runs.parquet").height == len(runs)


def test_summary_run_is_attached_and_never_loaded(fresh_store: Store, tmp_path: Path) -> None:
    runs = dashboards.load("t", tracking_uri=fresh_store.uri)
    report = write_report(runs, tmp_path / "out")
    first = attach(report, fresh_store.uri, "gatelab", "t")
    client = MlflowClient(tracking_uri=fresh_store.uri)
    run = client.get_run(first)
    assert run.data.tags["gatelab.summary"] == "1" and run.data.tags["gatelab.sweep.t"] == "1"
    assert "gatelab.run_hash" not in run.data.tags
    assert run.data.metrics["runs"] == len(runs)
    listed = {a.path for a in client.list_artifacts(first, "report")}
    assert {"report/report.html", "report/report.md", "report/tables"} <= listed
    again = dashboards.load("t", tracking_uri=fresh_store.uri)
    assert first not in again.frame["run_id"].to_list() and len(again) == len(runs)
    second = attach(report, fresh_store.uri, "gatelab", "t")
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    assert client.get_run(second).info.lifecycle_stage == "active"


def test_the_summary_run_counts_every_kind_of_verdict() -> None:
    from gatelab.dashboards.report.summary_run import verdict_counts

    counts = verdict_counts([Verdict.REPRODUCED, Verdict.UNDECIDED, Verdict.UNDECIDED,
                             Verdict.CONFOUNDED, "inconclusive at this scale"])
    assert counts == {"reproduced": 1, "not_reproduced": 0, "inconclusive": 1,
                      "undecided": 2, "confounded": 1}
    with pytest.raises(ValueError, match="a new kind"):
        verdict_counts([Verdict.NOT_REPRODUCED, "a new kind"])


def test_plots_that_have_no_data_are_skipped(tmp_path: Path) -> None:
    baseline_only = frame([FakeRun("baseline", 0)])
    assert plots.gate_scores(baseline_only, tmp_path / "g.png") is None
    assert plots.loss_vs_lr(baseline_only, tmp_path / "l.png") is None
    assert plots.internals_per_layer(frame([]), tmp_path / "i.png") is None
    grid = frame([FakeRun(v, s, 5.0, lr=lr, status="diverged" if lr > 0.05 else "finished")
                  for v in ("baseline", "g1-elementwise") for s in (0, 1)
                  for lr in (0.003, 0.01, 0.1)])
    path = plots.loss_vs_lr(grid, tmp_path / "lr.png")
    assert path is not None and path.read_bytes().startswith(PNG)


def _arrays(rid: str, hist: list[int], sink: float) -> RunArrays:
    """Two layers, two heads of 8x8 maps putting ``sink`` on key 0, the rest uniform."""
    n = 8
    maps = np.zeros((2, 2, n, n))
    for q in range(n):
        maps[:, :, q, 0] = 1.0 if q == 0 else sink
        maps[:, :, q, 1:q + 1] = 0.0 if q == 0 else (1 - sink) / q
    return RunArrays(rid, np.array([hist, hist]), np.linspace(0, 1, len(hist) - 1), maps,
                     np.array([sink, sink]))


def test_gate_histograms_and_attention_maps_from_run_arrays(tmp_path: Path) -> None:
    runs = frame([FakeRun("baseline", 0), FakeRun("g1-elementwise", 0),
                  FakeRun("g1-headwise", 0)])
    ids = dict(zip(runs["variant"], runs["run_id"], strict=True))
    assert plots.gate_histograms(runs, {}, tmp_path / "h.png") is None
    assert plots.attention_maps(runs, {}, tmp_path / "a.png") is None
    hist = [0] + [10] * 5 + [1000] * 5 + [0]  # 10 bins: mass in the top half
    arrays = {ids["baseline"]: _arrays(ids["baseline"], [0] * 12, 0.9),
              ids["g1-elementwise"]: _arrays(ids["g1-elementwise"], hist, 0.05),
              ids["g1-headwise"]: _arrays(ids["g1-headwise"], hist, 0.05)}
    h = plots.gate_histograms(runs, arrays, tmp_path / "h.png")
    a = plots.attention_maps(runs, arrays, tmp_path / "a.png")
    assert h is not None and a is not None
    assert h.read_bytes().startswith(PNG) and a.read_bytes().startswith(PNG)
    # Only the baseline has maps: it is drawn alone; no gate scores: no histogram.
    only = {ids["baseline"]: arrays[ids["baseline"]]}
    assert plots.gate_histograms(runs, only, tmp_path / "h2.png") is None
    assert plots.attention_maps(runs, only, tmp_path / "a2.png") is not None


def test_report_command_end_to_end_on_a_synthetic_store(fresh_store: Store,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "gatelab", "report", "t", "--tracking-uri", fresh_store.uri,
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "gate-lowers-loss" in result.stdout and "Attached to MLflow" in result.stdout
    assert (out / "report.html").is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "gatelab", "report", "nope", "--tracking-uri", fresh_store.uri,
         "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "no training runs tagged gatelab.sweep.nope" in missing.stderr


def test_uniform_first_token_share_is_the_mean_of_one_over_position() -> None:
    assert plots.uniform_first_token_share(2) == 0.5  # query 1 puts 1/2 on token 0
    assert plots.uniform_first_token_share(3) == (1 / 2 + 1 / 3) / 2
    assert abs(plots.uniform_first_token_share(256) - 0.0201) < 1e-4  # docs/sink-preset.md


def test_internals_over_training_needs_two_evaluation_steps(tmp_path: Path) -> None:
    runs = frame([FakeRun("baseline", 0), FakeRun("g1-elementwise", 0)])
    ids = runs["run_id"].to_list()

    def history(steps: list[int]) -> pl.DataFrame:
        return pl.DataFrame(
            [(rid, metric, step, 0.1 * step) for rid in ids for metric in ("f_attn", "m_act")
             for step in steps], schema={"run_id": pl.Utf8, "metric": pl.Utf8,
                                         "step": pl.Int64, "value": pl.Float64}, orient="row")

    assert plots.internals_over_training(runs, history([40]), tmp_path / "one.png") is None
    path = plots.internals_over_training(runs, history([20, 40]), tmp_path / "two.png")
    assert path is not None and path.read_bytes().startswith(PNG)
