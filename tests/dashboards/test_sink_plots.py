"""The sink-heads-over-training plot: drawn from per-layer ``sink_head_max`` histories, skipped
when there is nothing to draw, and listed in the report when the runs recorded it."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import polars as pl
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from synthetic import FakeRun, frame, log_run

from gatelab import dashboards
from gatelab.dashboards.report import plots
from gatelab.dashboards.report.write import draw_plots

PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA = {"run_id": pl.Utf8, "metric": pl.Utf8, "step": pl.Int64, "value": pl.Float64}


def _history(run_ids: list[str], layers: int, steps: list[int],
             metric: str = "sink_head_max") -> pl.DataFrame:
    return pl.DataFrame([(rid, f"{metric}.layer{i:02d}", step, 0.1 + 0.01 * step)
                         for rid in run_ids for i in range(layers) for step in steps],
                        schema=SCHEMA, orient="row")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def test_sink_plot_draws_a_panel_per_layer(tmp_path: Path) -> None:
    runs = frame([FakeRun("baseline", 0), FakeRun("baseline", 1),
                  FakeRun("g1-elementwise", 0)])
    ids = runs["run_id"].to_list()
    two = plots.sink_metrics_over_training(runs, _history(ids, 2, [20, 40]), tmp_path / "2.png")
    five = plots.sink_metrics_over_training(runs, _history(ids, 5, [20, 40]),
                                            tmp_path / "5.png")
    assert two is not None and five is not None
    # Four panels a row: five layers take a second row, two take one.
    assert _png_size(five)[1] > _png_size(two)[1]


def test_sink_plot_is_skipped_without_two_steps_of_sink_head_max(tmp_path: Path) -> None:
    runs = frame([FakeRun("baseline", 0), FakeRun("g1-elementwise", 0)])
    ids = runs["run_id"].to_list()
    assert plots.sink_metrics_over_training(runs, _history(ids, 2, [40]), tmp_path / "a.png"
                                            ) is None
    other = _history(ids, 2, [20, 40], metric="sink_heads_frac")  # not the plotted metric
    assert plots.sink_metrics_over_training(runs, other, tmp_path / "b.png") is None
    unknown = _history(["not-a-run"], 2, [20, 40])  # no finished run of the main setting
    assert plots.sink_metrics_over_training(runs, unknown, tmp_path / "c.png") is None
    assert plots.sink_metrics_over_training(frame([]), _history(ids, 2, [20, 40]),
                                            tmp_path / "d.png") is None
    assert not any(tmp_path.iterdir())


def _log_sink_history(client: MlflowClient, run_id: str, fake: FakeRun, peak: float) -> None:
    """Two evaluations of ``sink_head_max`` per layer, as the runner logs them."""
    now = int(time.time() * 1000)
    points = [Metric(f"sink_head_max.layer{i:02d}", peak * step / fake.steps, now, step)
              for i in range(2) for step in (fake.steps // 2, fake.steps)]
    client.log_batch(run_id, metrics=points)


def test_the_report_lists_the_sink_plot_when_runs_recorded_sink_heads(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gatelab", artifact_location=str(tmp_path / "artifacts"))
    peaks = {"baseline": 0.8, "g1-elementwise": 0.1}
    for variant, peak in peaks.items():
        fake = FakeRun(variant, 0, metrics={"sink_head_max": peak,
                                            "sink_heads_frac": 0.5 if peak > 0.3 else 0.0})
        _log_sink_history(client, log_run(client, exp, fake), fake, peak)
    runs = dashboards.load("t", tracking_uri=uri)
    assert sorted(runs.frame["sink_head_max"].to_list()) == [0.1, 0.8]
    made = {p.key: p for p in draw_plots(runs, tmp_path / "plots")}
    assert "sink_metrics_over_training" in made
    assert made["sink_metrics_over_training"].path.read_bytes().startswith(PNG)


def test_the_report_leaves_the_sink_plot_out_for_runs_without_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gatelab", artifact_location=str(tmp_path / "artifacts"))
    for variant in ("baseline", "g1-elementwise"):
        log_run(client, exp, FakeRun(variant, 0))
    runs = dashboards.load("t", tracking_uri=uri)
    assert runs.frame["sink_head_max"].null_count() == len(runs)  # a column, though null
    made = {p.key for p in draw_plots(runs, tmp_path / "plots")}
    assert "loss_curves" in made and "sink_metrics_over_training" not in made
