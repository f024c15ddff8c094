"""``gatelab compare A B``: every metric of A against B on the same seeds, printed and as a
page; an unknown variant is named with what the store has."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import Store

from gatelab.cli.main import main
from gatelab.dashboards import load
from gatelab.dashboards.store.columns import FINAL_METRICS
from gatelab.dashboards.tables.compare import compare_variants


def test_compare_pairs_every_metric_on_seeds(store: Store, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "cmp.html"
    code = main(["compare", "g1-elementwise", "baseline", "--sweep", "t", "--tracking-uri",
                 store.uri, "--out", str(page)])
    out = capsys.readouterr().out
    assert code == 0 and "val_loss" in out and "A - B" in out
    frame = compare_variants(load("t", tracking_uri=store.uri).frame, "g1-elementwise",
                             "baseline", FINAL_METRICS)
    loss = frame.filter(frame["metric"] == "val_loss").row(0, named=True)
    # g1-elementwise finished seeds 0 and 1 at 4.9 + 0.1 s, the baseline 5.0 + 0.1 s.
    assert loss["n_pairs"] == 2 and loss["diff"] == pytest.approx(-0.1)
    assert loss["mean_a"] == pytest.approx(4.95) and loss["mean_b"] == pytest.approx(5.1)
    html = page.read_text()  # the report's templates and CSS, not a page of its own
    assert "<title>g1-elementwise against baseline</title>" in html
    assert '<table class="table">' in html and "table.table th" in html
    assert "<td>val_loss</td>" in html


def test_compare_names_an_unknown_variant(store: Store,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "g1-elementwse", "baseline", "--sweep", "t", "--tracking-uri",
                 store.uri])
    err = capsys.readouterr().err
    assert code != 0 and "did you mean 'g1-elementwise'?" in err
    assert "variants with runs: baseline, g1-elementwise" in err
