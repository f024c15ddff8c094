"""The paper's reported numbers per variant, as a frame to put beside ours.

They come from the specs (``ablations/*.yaml``, ``paper:`` entries; loaded through
``gatelab.registry.loader``, which is data, not training code). Perplexities are the 15A2B MoE
setting's (Tables 1, 3, 4 and 6 share one baseline, 6.026); Table 2's dense rows have other
baselines and are left out of these columns. A variant with no paper row has nulls.
"""

from __future__ import annotations

import warnings
from functools import cache

import polars as pl

from gatelab.dashboards.store.columns import DType
from gatelab.registry.loader import load_all_valid
from gatelab.registry.schema import VariantSpec

MOE_TABLES = (1, 3, 4, 6)
"""Tables of the 15A2B MoE setting, whose perplexities are comparable with each other."""

PAPER_SCHEMA: dict[str, DType] = {
    "variant": pl.Utf8, "paper_row": pl.Utf8, "paper_ppl": pl.Float64,
    "paper_d_ppl": pl.Float64, "paper_added_params_m": pl.Float64,
    "paper_gate_score": pl.Float64, "paper_m_act": pl.Float64, "paper_f_attn": pl.Float64,
}
"""``paper_d_ppl``: the variant's PPL minus the baseline's, in the same setting."""


def paper_rows(specs: list[VariantSpec]) -> pl.DataFrame:
    """One row per spec with the paper's numbers (``PAPER_SCHEMA``)."""
    rows = []
    for spec in specs:
        moe = [p for p in spec.paper if p.table in MOE_TABLES]
        ppl = next((p.ppl for p in moe if p.ppl is not None), None)
        added = next((p.added_params_m for p in moe if p.added_params_m is not None), None)
        t4 = next((p for p in spec.paper if p.table == 4), None)
        rows.append({
            "variant": spec.id, "paper_row": spec.paper_row, "paper_ppl": ppl,
            "paper_d_ppl": None, "paper_added_params_m": added,
            "paper_gate_score": t4.mean_gate_score if t4 else None,
            "paper_m_act": t4.m_act if t4 else None, "paper_f_attn": t4.f_attn if t4 else None,
        })
    frame = pl.DataFrame(rows, schema=PAPER_SCHEMA)
    base = frame.filter(pl.col("variant") == "baseline")["paper_ppl"]
    base_ppl = base[0] if base.len() else None
    return frame.with_columns((pl.col("paper_ppl") - base_ppl).alias("paper_d_ppl"))


@cache
def paper_frame() -> pl.DataFrame:
    """The paper's numbers for every valid spec (an invalid file is left out with a warning
    naming it: its variant's tables then show our numbers alone)."""
    specs, errors = load_all_valid()
    for err in errors:
        warnings.warn(f"left out of the paper's numbers: {err}", stacklevel=2)
    return paper_rows(specs)
