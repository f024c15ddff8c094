"""From an architecture and a size to the backbone before parameter matching: the spec's
``capacity`` (more heads or experts, relative to the size), and the rules that depend on the
size. Raises ``SpecError`` naming the spec, field and size. Parameter matching counts built
modules, so it lives with the model (``gatelab.model.build``).
"""

from __future__ import annotations

import dataclasses

from gatelab.registry.backbone import Backbone
from gatelab.registry.errors import Problem, SpecError
from gatelab.registry.presets import get_preset
from gatelab.registry.schema import Architecture, Combine, Granularity, Position


def size_backbone(size: str | Backbone) -> Backbone:
    """The backbone a size preset names (or ``size`` itself)."""
    return get_preset(size) if isinstance(size, str) else size


def apply_capacity(arch: Architecture, size: str | Backbone, where: str = "the spec"
                   ) -> Backbone:
    """The size's backbone with ``arch.capacity`` applied; ``where`` names the spec in errors."""
    bb = size_backbone(size)
    where = f"{where} at {size if isinstance(size, str) else 'the given backbone'}"
    cap = arch.capacity
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
    problems += _scale_cancelled_by_qk_norm(arch, bb)
    if problems:
        raise SpecError(where, problems)
    return dataclasses.replace(bb, n_heads=int(n_heads), n_kv_heads=int(n_kv), moe=moe)


def _scale_cancelled_by_qk_norm(arch: Architecture, bb: Backbone) -> list[Problem]:
    """A headwise multiplicative gate on q or k only rescales each head, which QK-norm's RMSNorm
    then removes: the gate would do nothing."""
    gate = arch.gate
    if (gate is None or not bb.qk_norm or gate.position not in (Position.G3, Position.G4)
            or gate.granularity is not Granularity.HEADWISE
            or gate.combine is not Combine.MULTIPLICATIVE):
        return []
    return [Problem("gate.granularity", f"'headwise' with combine: multiplicative at "
                    f"{gate.position.value} is cancelled by QK-norm (RMSNorm removes a per-head "
                    "scale); use elementwise, combine: additive, or a size with qk_norm: false")]


def with_ffn_width(bb: Backbone, width: int) -> Backbone:
    """``bb`` with the dense FFN (or each expert) ``width`` wide."""
    if bb.moe is not None:
        return dataclasses.replace(bb, moe=dataclasses.replace(bb.moe, expert_hidden=width))
    return dataclasses.replace(bb, ffn_hidden=width)
