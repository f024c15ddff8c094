"""From a spec and a size preset to the backbone a model is built from.

Applies the spec's ``capacity`` (more heads or experts, relative to the preset) and
``param_match`` (a narrower FFN, found from the built modules' parameter counts), and checks
the rules that depend on the size. Raises ``SpecError`` naming the spec, field and preset.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import torch

from registry.backbone import Backbone
from registry.errors import Problem, SpecError
from registry.presets import get_preset
from registry.schema import (
    Combine,
    GateSpec,
    Granularity,
    NormPlacement,
    Position,
    SdpaControl,
    VariantSpec,
)


def resolve_backbone(spec: VariantSpec, preset: str | Backbone) -> Backbone:
    """The backbone to build ``spec`` at ``preset`` (a preset name or a backbone)."""
    base = get_preset(preset) if isinstance(preset, str) else preset
    where = f"{spec.id} at {preset if isinstance(preset, str) else 'the given backbone'}"
    backbone = _apply_capacity(spec, base, where)
    if spec.param_match:
        backbone = _match_params(spec, base, backbone)
    return backbone


def _apply_capacity(spec: VariantSpec, bb: Backbone, where: str) -> Backbone:
    cap = spec.capacity
    problems = []
    n_heads = bb.n_heads * cap.q_heads_mult
    n_kv = bb.n_kv_heads * cap.kv_heads_mult
    for name, value, count in (("q_heads_mult", n_heads, bb.n_heads), ("kv_heads_mult", n_kv,
                                                                        bb.n_kv_heads)):
        if value != int(value):
            problems.append(Problem(f"capacity.{name}", f"gives {value} heads from {count}; "
                                    "choose a multiplier that gives a whole number"))
    if not problems and int(n_heads) % int(n_kv):
        problems.append(Problem("capacity", f"{int(n_heads)} query heads are not a multiple of "
                                f"{int(n_kv)} key/value heads"))
    moe = bb.moe
    if cap.extra_experts:
        if moe is None:
            problems.append(Problem("capacity.extra_experts", f"{cap.extra_experts} needs an MoE "
                                    "FFN; use an MoE size preset (tiny-moe, paper-moe-15a2b)"))
        else:
            moe = dataclasses.replace(moe, n_experts=moe.n_experts + cap.extra_experts,
                                      top_k=moe.top_k + cap.extra_experts)
    problems += _scale_cancelled_by_qk_norm(spec, bb)
    if problems:
        raise SpecError(where, problems)
    return dataclasses.replace(bb, n_heads=int(n_heads), n_kv_heads=int(n_kv), moe=moe)


def _scale_cancelled_by_qk_norm(spec: VariantSpec, bb: Backbone) -> list[Problem]:
    """A headwise multiplicative gate on q or k only rescales each head, which QK-norm's RMSNorm
    then removes: the gate would do nothing."""
    gate = spec.gate
    if (gate is None or not bb.qk_norm or gate.position not in (Position.G3, Position.G4)
            or gate.granularity is not Granularity.HEADWISE
            or gate.combine is not Combine.MULTIPLICATIVE):
        return []
    return [Problem("gate.granularity", f"'headwise' with combine: multiplicative at "
                    f"{gate.position.value} is cancelled by QK-norm (RMSNorm removes a per-head "
                    "scale); use elementwise, combine: additive, or a size with qk_norm: false")]


def _match_params(spec: VariantSpec, base: Backbone, bb: Backbone) -> Backbone:
    """Narrow the dense FFN (or each expert) so the total equals the spec's own no-gate,
    no-control model at the preset. The count is linear in the width, so two builds find it."""
    plain = (None, None, spec.norm)
    target = count_built(_apply_capacity(spec, base, spec.id), *plain)
    arch = (spec.gate, spec.sdpa_control, spec.norm)
    width = bb.moe.expert_hidden if bb.moe is not None else bb.ffn_hidden
    at_width = count_built(bb, *arch)
    per_unit = at_width - count_built(_with_ffn_width(bb, width - 1), *arch)
    narrowed = width - round((at_width - target) / per_unit)
    return _with_ffn_width(bb, narrowed)


def _with_ffn_width(bb: Backbone, width: int) -> Backbone:
    if bb.moe is not None:
        return dataclasses.replace(bb, moe=dataclasses.replace(bb.moe, expert_hidden=width))
    return dataclasses.replace(bb, ffn_hidden=width)


@cache
def count_built(
    backbone: Backbone, gate: GateSpec | None, control: SdpaControl | None, norm: NormPlacement
) -> int:
    """Parameters of the model built (on the meta device) from these parts."""
    from model.transformer import GatedLM

    spec = VariantSpec(id="count", description="", hypothesis="", base="baseline", gate=gate,
                       sdpa_control=control, norm=norm)
    with torch.device("meta"):
        return GatedLM(backbone, spec).num_params()
