"""``gatelab list``'s rows and its family-grouped table (``gatelab.cli.variants``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gatelab.cli.variants import by_family, variant_row, variants_table
from gatelab.registry.loader import load_all

REPO = Path(__file__).resolve().parents[3]


def _rows() -> list[dict[str, object]]:
    return [variant_row(spec) for spec in load_all()]


def test_rows_name_their_family_and_what_they_change_in_attention() -> None:
    rows = {r["id"]: r for r in _rows()}
    assert rows["g1-elementwise"]["family"] == "paper gates"
    assert rows["baseline"]["family"] == "paper controls"
    assert rows["switch-v-8-top-2"]["attention"] == "switch v 8 top-2"
    assert rows["clipped-softmax"]["attention"] == "clipped-softmax(-0.03,1.0)"
    assert rows["sink-token"]["attention"] == "sink-token x1"
    assert rows["g1-headwise-sink-logit"]["attention"] == "sink-logit"
    assert rows["g1-headwise-sink-logit"]["granularity"] == "headwise"
    assert rows["baseline"]["attention"] is None
    assert rows["sink-logit"]["sources"][0]["arxiv"] == "2508.10925"
    assert rows["switch-kv-8-top-8"]["switch_head"] == {"projections": "kv", "n_experts": 8,
                                                         "top_k": 8}


def test_the_table_has_one_section_per_family_in_order_with_every_variant_once() -> None:
    rows = _rows()
    text = variants_table(rows)
    titles = [line for line in text.splitlines() if line.endswith(")") and "  " not in line]
    assert [t.rsplit(" (", 1)[0] for t in titles] == [
        "paper gates", "paper controls", "SwitchHead", "sink mitigations"]
    assert sum(int(t.rsplit("(", 1)[1].rstrip(")")) for t in titles) == len(rows)
    for r in rows:
        assert sum(line.split()[0] == r["id"] for line in text.splitlines() if line) == 1
    groups = dict(by_family(rows))
    sink_section = text.split("sink mitigations (")[1]
    assert all(r["id"] in sink_section for r in groups["sink mitigations"])
    assert "g1-elementwise " not in sink_section


def test_list_json_has_at_least_33_variants_with_their_family() -> None:
    result = subprocess.run([sys.executable, "-m", "gatelab", "list", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) >= 33
    assert {r["family"] for r in rows} == {"paper gates", "paper controls", "SwitchHead",
                                          "sink mitigations"}
