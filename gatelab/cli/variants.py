"""The rows of ``gatelab list``: one plain dict per variant, ready for JSON or a table, and the
text table grouped by family (paper gates, paper controls, SwitchHead, sink mitigations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatelab.cli.format import human_count, table
from gatelab.model.build import added_params
from gatelab.registry.hashing import spec_hash
from gatelab.registry.presets import PAPER_TABLE1_PRESET, tiny_preset_for
from gatelab.registry.schema import Family, Normaliser, VariantSpec, architecture_dict, to_plain

GATE_COLUMNS = ("position", "granularity", "sharing", "combine", "activation", "input")

FAMILY_ORDER = tuple(Family)
"""The order families are listed in (``Family``'s own)."""


def attention_label(spec: VariantSpec) -> str | None:
    """What a variant changes in attention besides the gate, in a few characters:
    ``sigmoid``, ``clipped-softmax(-0.03,1.0)``, ``sink-token x1``, ``switch v 8 top-2``;
    ``None`` for plain softmax attention."""
    parts = []
    arch = spec.architecture
    norm = arch.normaliser
    if norm.kind is Normaliser.CLIPPED_SOFTMAX:
        parts.append(f"{norm.kind.value}({norm.gamma},{norm.zeta})")
    elif norm.kind is not Normaliser.SOFTMAX:
        parts.append(norm.kind.value)
    if arch.sink_tokens:
        parts.append(f"sink-token x{arch.sink_tokens}")
    if arch.switch_head is not None:
        sw = arch.switch_head
        parts.append(f"switch {sw.projections.value} {sw.n_experts} top-{sw.top_k}")
    return ", ".join(parts) or None


def variant_row(spec: VariantSpec) -> dict[str, Any]:
    """``id``, ``family``, the gate's axes, ``paper_row``, ``added_params_paper`` (at the
    paper's 15A2B shape), ``added_params_tiny``, a key per architecture field as the schema
    writes it (``registry.schema.architecture_dict``: ``gate`` is ``None`` or the gate's
    fields), ``sources`` and the rest."""
    arch = architecture_dict(spec)
    gate = arch["gate"]
    tiny = tiny_preset_for(spec)
    row: dict[str, Any] = {"id": spec.id, "family": spec.family.value}
    for column in GATE_COLUMNS:
        row[column] = gate[column] if isinstance(gate, dict) else None
    row.update(
        paper_row=spec.paper_row,
        paper_rows=[p.label for p in spec.paper],
        added_params_paper=added_params(spec, PAPER_TABLE1_PRESET),
        added_params_tiny=added_params(spec, tiny),
        tiny_preset=tiny,
        **arch,
        attention=attention_label(spec),
        sources=to_plain(spec.sources),
        base=spec.base,
        description=spec.description,
        spec_hash=spec_hash(spec),
    )
    return row


def by_family(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows grouped by ``family`` in ``FAMILY_ORDER`` (empty families left out), each
    group in the given order."""
    groups = [(f.value, [r for r in rows if r["family"] == f.value]) for f in FAMILY_ORDER]
    return [(name, group) for name, group in groups if group]


HEADERS = ("id", "pos", "granularity", "sharing", "combine", "activation", "input", "attention",
           "paper", "+params paper", "+params tiny")


def _cells(r: dict[str, Any]) -> tuple[object, ...]:
    position = r["position"] or ("ctl:" + r["sdpa_control"] if r["sdpa_control"] else None)
    tiny = human_count(r["added_params_tiny"])
    if r["tiny_preset"] != "tiny":
        tiny += f" ({r['tiny_preset']})"
    return (r["id"], position, r["granularity"], r["sharing"], r["combine"], r["activation"],
            r["input"], r["attention"], r["paper_row"], human_count(r["added_params_paper"]),
            tiny)


def variants_table(rows: Sequence[dict[str, Any]]) -> str:
    """``gatelab list``'s table: one section per family, each headed by its name and count,
    the columns aligned across sections."""
    groups = by_family(rows)
    cells = [_cells(r) for _, group in groups for r in group]
    lines = table(HEADERS, cells).splitlines()
    header, rule, body = lines[0], lines[1], lines[2:]
    out, start = [], 0
    for name, group in groups:
        out += ["", f"{name} ({len(group)})", header, rule, *body[start:start + len(group)]]
        start += len(group)
    return "\n".join(out[1:])
