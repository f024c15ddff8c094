"""End to end in headless Chromium, on the real ``smoke`` sweep (shortened): the HTML report
written by ``gatelab report`` renders its tables and images from disk, and the MLflow UI
started by ``gatelab ui`` lists the sweep's runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


def test_mlflow_ui_lists_the_sweep_runs(real_sweep: RealSweep, browser: Any,
                                        tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=real_sweep.uri)
    experiment = client.get_experiment_by_name("gatelab")
    assert experiment is not None
    names = [r.info.run_name for r in client.search_runs(
        [experiment.experiment_id], f"tags.`gatelab.sweep.{real_sweep.name}` = '1'")]
    training = [n for n in names if not n.startswith("summary-")]  # the report's summary run
    smoke = short_smoke()
    assert len(training) == len(smoke["variants"]) * len(smoke["seeds"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115
    ui = subprocess.Popen(
        [sys.executable, "-m", "gatelab", "ui", "--port", str(port), "--tracking-uri",
         real_sweep.uri], cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not is_up(url):
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow UI did not start in 120 s"
            time.sleep(0.5)
        assert ui.stdout is not None
        assert url in ui.stdout.readline()
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs"
                      "?workflowType=machine_learning")
            # The runs are nested under the sweep's parent run: expand it.
            parent = page.locator(".ag-row", has=page.get_by_role(
                "link", name=f"sweep {real_sweep.name}", exact=True)).first
            parent.wait_for(timeout=90_000)
            parent.locator("button").first.click()
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
        finally:
            page.close()
    finally:
        os.kill(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
        log.close()
    assert not is_up(url), "gatelab ui left its MLflow server running"
