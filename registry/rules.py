"""Cross-field rules: combinations of legal values that a spec still may not write.

Each rule looks at a whole spec and returns the problems it finds; ``check`` runs them all.
Rules that depend on a size (head counts, MoE) live in ``resolve.py``. The range of each number
of a spec is stated once, in ``BOUNDS``, which ``from_dict`` checks as it reads each number
(with finiteness, which it requires of every number).
"""

from __future__ import annotations

from collections.abc import Callable

from gatelab.registry.errors import Problem
from gatelab.registry.from_dict import Bound
from gatelab.registry.schema import (
    ExpertProjections,
    GateInput,
    Granularity,
    Normaliser,
    Position,
    Sharing,
    VariantSpec,
)

BOUNDS: dict[str, Bound] = {
    "gate.init.std": Bound(gt=0, le=10),
    "gate.init.bias": Bound(ge=-100, le=100),
    "capacity.q_heads_mult": Bound(gt=0, le=64),
    "capacity.kv_heads_mult": Bound(gt=0, le=64),
    "capacity.extra_experts": Bound(ge=0, le=1024),
    "normaliser.gamma": Bound(ge=-1, le=0),
    "normaliser.zeta": Bound(ge=1, le=2),
    "sink_tokens": Bound(ge=0, le=16),
    "switch_head.n_experts": Bound(ge=1, le=64),
    "switch_head.top_k": Bound(ge=1, le=64),
}
"""The allowed range of each number of a spec, by dotted field, for ``from_dict`` (``None``
values, such as an absent bias, are not checked). Wide enough for any real variant; narrow
enough that ``gatelab list`` can build every spec at the paper's size on the meta device."""


def _no_heads_at_g5(spec: VariantSpec) -> list[Problem]:
    gate = spec.architecture.gate
    if gate is None or gate.position is not Position.G5:
        return []
    problems = []
    why = "at G5 (after the output projection) there are no heads"
    if gate.granularity is Granularity.HEADWISE:
        problems.append(
            Problem("gate.granularity", f"'headwise' is not allowed: {why}; use elementwise")
        )
    if gate.sharing is Sharing.HEAD_SHARED:
        problems.append(
            Problem("gate.sharing", f"'head-shared' is not allowed: {why}; use head-specific")
        )
    return problems


def _control_excludes_gate(spec: VariantSpec) -> list[Problem]:
    arch = spec.architecture
    if arch.gate is not None and arch.sdpa_control is not None:
        return [
            Problem(
                "sdpa_control",
                f"{arch.sdpa_control.value!r} cannot be combined with a gate: the paper's "
                "controls replace the gate; set gate: null or sdpa_control: null",
            )
        ]
    return []


def _independent_gate_has_no_bias(spec: VariantSpec) -> list[Problem]:
    gate = spec.architecture.gate
    if gate is None or gate.input is not GateInput.INDEPENDENT or gate.init.bias is None:
        return []
    return [
        Problem(
            "gate.init.bias",
            f"{gate.init.bias!r} is not allowed with input: independent (its learned parameter "
            "already is a bias); set bias: null, or initialise through init.weight",
        )
    ]


def _stretch_only_for_clipped_softmax(spec: VariantSpec) -> list[Problem]:
    norm = spec.architecture.normaliser
    clipped = norm.kind is Normaliser.CLIPPED_SOFTMAX
    problems = []
    for name, value, example in (("gamma", norm.gamma, -0.03), ("zeta", norm.zeta, 1.0)):
        if clipped and value is None:
            problems.append(Problem(f"normaliser.{name}", "is required with kind: "
                                    f"clipped-softmax (Bondarenko et al. use {example})"))
        elif not clipped and value is not None:
            problems.append(Problem(f"normaliser.{name}", f"{value!r} is not allowed with kind: "
                                    f"{norm.kind.value}: only clipped-softmax reads it; set "
                                    f"{name}: null"))
    return problems


def _top_k_within_experts(spec: VariantSpec) -> list[Problem]:
    switch = spec.architecture.switch_head
    if switch is None or switch.top_k <= switch.n_experts:
        return []
    return [Problem("switch_head.top_k", f"{switch.top_k} is more than n_experts "
                    f"({switch.n_experts}); choose top_k <= n_experts")]


SWITCHED_POSITIONS = {
    ExpertProjections.V: (Position.G2,),
    ExpertProjections.KV: (Position.G2, Position.G3),
}
"""The gate positions whose tensor SwitchHead's experts produce (and its router gates)."""


def _no_gate_on_switched_projection(spec: VariantSpec) -> list[Problem]:
    switch, gate = spec.architecture.switch_head, spec.architecture.gate
    if switch is None or gate is None:
        return []
    if gate.position not in SWITCHED_POSITIONS[switch.projections]:
        return []
    return [Problem("gate.position", f"{gate.position.value!r} is not allowed with switch_head "
                    f"on {switch.projections.value}: its router already gates that projection "
                    "(one expert top-1 is the G2 headwise gate); gate G1, G4 or G5, or set "
                    "gate: null")]


def _base_is_set(spec: VariantSpec) -> list[Problem]:
    if spec.base is None and spec.id != "baseline":
        return [Problem("base", "is required: name the spec this variant is a diff from")]
    return []


RULES: tuple[Callable[[VariantSpec], list[Problem]], ...] = (
    _no_heads_at_g5,
    _control_excludes_gate,
    _independent_gate_has_no_bias,
    _stretch_only_for_clipped_softmax,
    _top_k_within_experts,
    _no_gate_on_switched_projection,
    _base_is_set,
)


def check(spec: VariantSpec) -> list[Problem]:
    """Every rule's problems with ``spec``; empty if it is legal."""
    return [p for rule in RULES for p in rule(spec)]
