"""End to end in headless Chromium, on the real ``smoke`` sweep (shortened): the HTML report
written by ``gatelab report`` renders its tables and images from disk, and the MLflow UI
started by ``gatelab ui`` shows the sweep as its parent run, which expands to the sweep's runs
with their source, dataset and description."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from real_sweep import RealSweep, short_smoke

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def test_html_report_renders_tables_and_images(real_sweep: RealSweep, browser: Any,
                                                tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "gatelab", "report", real_sweep.name, "--tracking-uri",
         real_sweep.uri, "--out", str(out)], cwd=real_sweep.folder, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        # It leads with the answer: the forest plot is the first image, then the internals.
        first = page.evaluate("Array.from(document.images).slice(0, 2).map("
                              "i => i.closest('figure').id)")
        assert first == ["effects_forest", "internals_by_variant"]
        # Nothing is wider than the 1280 px window: no horizontal scrolling.
        widest = page.evaluate("Math.max(...Array.from(document.querySelectorAll('body *'))"
                               ".map(e => e.getBoundingClientRect().right))")
        assert widest <= 1280 and page.evaluate(
            "document.documentElement.scrollWidth") <= 1280, widest
        assert page.locator("table").count() == 10
        table1 = page.locator("h2#table1 ~ table").first
        smoke = short_smoke()["variants"]
        assert table1.locator("tbody tr").count() == len(smoke)
        assert all(variant in table1.inner_text() for variant in smoke)
        # The verdicts as sentences, each with its statistic, one per verdict row.
        sentences = page.locator("#verdict-sentences li").all_inner_texts()
        rows = page.locator("h2#verdicts ~ table").first.locator("tbody tr").count()
        assert sentences and len(sentences) == rows
        assert all(" n = " in s and ("p = " in s or "no p-value" in s) for s in sentences)
        assert any("seeds would decide it" in s for s in sentences)  # two seeds: power
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, "
                               "i.naturalWidth, i.naturalHeight, i.alt])")
        assert len(images) == 9  # two headline figures, every plot but loss against LR
        for key in ("loss_curves", "internals_per_layer", "internals_over_training",
                    "sink_metrics_over_training", "gate_histograms", "attention_maps"):
            assert page.locator(f"figure#{key} img").count() == 1, key
        assert all(done and w > 0 and h > 0 and len(alt) > 20 for done, w, h, alt in images)
        shot = page.screenshot(full_page=True)
        assert shot.startswith(PNG) and len(shot) > 50_000
    finally:
        page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2.0):
            return True
    except (urllib.error.URLError, OSError):
        return False


TRAINING_VIEW = "workflowType=machine_learning"
"""The UI's "Model training" view (``gatelab.cli.sweep_text.TRAINING_VIEW``)."""


def cell(page: Any, run_id: str, column: str) -> Any:
    """The runs table's cell of ``column`` (an attribute column: Source, Dataset, ...) in the
    row of ``run_id`` (the grid's rows are keyed by run id)."""
    return page.locator(f'.ag-row[row-id="{run_id}"] [col-id="attributes.`{column}`"]').first


def check_sweep_in_ui(page: Any, url: str, client: MlflowClient, experiment: str,
                      sweep: str) -> int:
    """Opened on the experiment, the UI shows its training runs (not the GenAI overview): the
    sweep's parent run, which expands to its runs, each with its source, dataset and
    description. Returns how many runs the parent holds."""
    from playwright.sync_api import expect

    exp = client.get_experiment_by_name(experiment)
    [parent] = client.search_runs([exp.experiment_id], f"tags.`gatelab.sweep_parent` = '{sweep}'")
    children = client.search_runs([exp.experiment_id], f"tags.`gatelab.sweep.{sweep}` = '1' "
                                  f"and tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) >= 2
    page.goto(f"{url}/#/experiments/{exp.experiment_id}?{TRAINING_VIEW}")
    parent_link = page.get_by_role("link", name=parent.info.run_name, exact=True)
    parent_link.wait_for(timeout=90_000)
    assert "/runs" in page.url and "/overview" not in page.url, page.url
    first = children[0]
    assert page.locator(f'.ag-row[row-id="{first.info.run_id}"]').count() == 0  # collapsed
    page.locator(f'.ag-row[row-id="{parent.info.run_id}"] [col-id="attributes.`Run Name`"] '
                 "button").first.click()
    for child in children:
        page.get_by_role("link", name=child.info.run_name, exact=True).wait_for(timeout=30_000)
        (dataset,) = child.inputs.dataset_inputs
        expect(cell(page, child.info.run_id, "Dataset")).to_contain_text(
            f"{dataset.dataset.name} ({dataset.dataset.digest[:8]}")
        expect(cell(page, child.info.run_id, "Source")).to_contain_text("gatelab")
    # The Description column is off by default: switched on as a user would.
    page.get_by_role("button", name="Columns", exact=True).click()
    page.get_by_title("Description", exact=True).click()  # a node of the columns' tree
    page.keyboard.press("Escape")
    for run in (parent, *children):
        description = run.data.tags["mlflow.note.content"].splitlines()[0]
        expect(cell(page, run.info.run_id, "Description")).to_contain_text(description[:40])
    return len(children)


@pytest.mark.skipif(sys.platform != "linux", reason="the UI's supervisor uses PR_SET_PDEATHSIG")
def test_the_mlflow_ui_shows_the_sweep_as_a_parent_run_with_its_runs(
        real_sweep: RealSweep, browser: Any, tmp_path: Path) -> None:
    """``gatelab ui`` on the sweep's store: every training run of the sweep is nested under its
    parent run, which the UI shows (with each run's source, dataset and description); SIGTERM
    takes the server down."""
    client = MlflowClient(tracking_uri=real_sweep.uri)
    smoke = short_smoke()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115
    ui = subprocess.Popen(
        [sys.executable, "-m", "gatelab", "ui", "--port", str(port), "--tracking-uri",
         real_sweep.uri], cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True,
        start_new_session=True)
    try:
        assert ui.stdout is not None
        ready, _, _ = select.select([ui.stdout], [], [], 180)
        line = ui.stdout.readline() if ready else ""
        assert url in line, (tmp_path / "ui.log").read_text()[-3000:]
        page = browser.new_page(viewport={"width": 2400, "height": 1000})
        try:
            shown = check_sweep_in_ui(page, url, client, "gatelab", real_sweep.name)
        finally:
            page.close()
        assert shown == len(smoke["variants"]) * len(smoke["seeds"])
        os.kill(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(timeout=60)
        log.close()
    assert not is_up(url), "gatelab ui left its MLflow server running"
