"""The rows of ``gatelab list``: one plain dict per variant, ready for JSON or a table."""

from __future__ import annotations

from typing import Any

from gatelab.model.build import added_params
from gatelab.registry.hashing import spec_hash
from gatelab.registry.presets import PAPER_TABLE1_PRESET, tiny_preset_for
from gatelab.registry.schema import VariantSpec, to_plain

GATE_COLUMNS = ("position", "granularity", "sharing", "combine", "activation", "input")


def variant_row(spec: VariantSpec) -> dict[str, Any]:
    """``id``, the gate's axes, ``paper_row``, ``added_params_paper`` (at the paper's 15A2B
    shape), ``added_params_tiny``, ``gate`` (``None`` or the gate's fields) and the rest."""
    gate = to_plain(spec.gate)
    tiny = tiny_preset_for(spec)
    row: dict[str, Any] = {"id": spec.id}
    for column in GATE_COLUMNS:
        row[column] = gate[column] if isinstance(gate, dict) else None
    row.update(
        paper_row=spec.paper_row,
        paper_rows=[p.label for p in spec.paper],
        added_params_paper=added_params(spec, PAPER_TABLE1_PRESET),
        added_params_tiny=added_params(spec, tiny),
        tiny_preset=tiny,
        gate=gate,
        sdpa_control=to_plain(spec.sdpa_control),
        norm=spec.norm.value,
        capacity=to_plain(spec.capacity),
        param_match=spec.param_match,
        base=spec.base,
        description=spec.description,
        spec_hash=spec_hash(spec),
    )
    return row
