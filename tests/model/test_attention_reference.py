"""``Attention`` against the naive float64 reference, for every gate the schema allows.

Every parameter is set to random normal values (so gate scores are spread over the
activation's range and norm weights are not ones) and the input is random.
"""

from __future__ import annotations

import dataclasses
import itertools

import naive_reference as ref
import pytest
import torch

from gatelab.model.attention import Attention
from gatelab.model.attention_ops import Kernel, KernelChoice, resolve_kernel
from gatelab.model.gates import Gate
from gatelab.model.rope import rope_tables
from gatelab.registry.backbone import Backbone
from gatelab.registry.rules import check
from gatelab.registry.schema import (
    Activation,
    Architecture,
    Combine,
    GateInit,
    GateInput,
    GateSpec,
    Granularity,
    Position,
    SdpaControl,
    Sharing,
    VariantSpec,
    WeightInit,
)

BACKBONE = Backbone(
    n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64, vocab_size=50
)
B, T = 2, 7

# Everything runs in float64, so agreement is to float64 rounding; a wrong semantics (order,
# layout, head mapping, missing bias) shows as an O(1) difference.
TOL = {"rtol": 1e-10, "atol": 1e-10}

AXES = (Position, Granularity, Sharing, Combine, Activation, GateInput)


def _spec(gate: GateSpec | None) -> VariantSpec:
    return VariantSpec(id="x", description="", hypothesis="", base="baseline",
                       architecture=Architecture(gate=gate))


ALL_GATES = [GateSpec(*values) for values in itertools.product(*AXES)]
LEGAL_GATES = [g for g in ALL_GATES if not check(_spec(g))]


def _gate_id(gate: GateSpec) -> str:
    fields = (gate.position, gate.granularity, gate.sharing, gate.combine, gate.activation)
    bias = "" if gate.init.bias is None else f"-bias{gate.init.bias}"
    return "-".join(fields) + f"-{gate.input}{bias}"


def _inputs(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, BACKBONE.d_model, generator=generator, dtype=torch.float64).to(dtype)
    cos, sin = rope_tables(BACKBONE.head_dim, T, BACKBONE.rope_base)
    return x, cos, sin


def _built(
    gate: GateSpec | None = None,
    control: SdpaControl | None = None,
    kernel: Kernel = Kernel.SDPA,
    dtype: torch.dtype = torch.float64,
) -> Attention:
    attn = Attention(BACKBONE, Architecture(gate=gate, sdpa_control=control), kernel).to(dtype)
    ref.randomize(attn, seed=1)
    return attn


def _check_against_reference(gate: GateSpec | None, control: SdpaControl | None = None) -> None:
    attn = _built(gate, control)
    x, cos, sin = _inputs(seed=2)
    got, _ = attn(x, cos, sin)
    params = ref.Params(attn)
    want, _ = ref.attention(BACKBONE, gate, control, params, x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, **TOL)
    assert params.unused() == set(), "the module has parameters the paper's gate does not use"


def test_rules_reject_exactly_g5_with_heads() -> None:
    rejected = [g for g in ALL_GATES if check(_spec(g))]
    assert rejected == [
        g
        for g in ALL_GATES
        if g.position is Position.G5
        and (g.granularity is Granularity.HEADWISE or g.sharing is Sharing.HEAD_SHARED)
    ]
    assert len(LEGAL_GATES) == 4 * 2 * 2 * 2 * 4 * 2 + 2 * 4 * 2


@pytest.mark.parametrize("gate", LEGAL_GATES, ids=_gate_id)
def test_every_legal_gate_matches_the_reference(gate: GateSpec) -> None:
    _check_against_reference(gate)


WITH_BIAS = (
    GateSpec(*axes, init=GateInit(bias=2.0))
    for axes in itertools.product(Position, Granularity, Sharing)
)
BIASED = [g for g in WITH_BIAS if not check(_spec(g))]


@pytest.mark.parametrize("gate", BIASED, ids=_gate_id)
def test_a_gate_bias_is_added_to_x_w(gate: GateSpec) -> None:
    _check_against_reference(gate)


@pytest.mark.parametrize("control", list(SdpaControl))
def test_sdpa_controls_match_the_reference(control: SdpaControl) -> None:
    _check_against_reference(None, control)


def test_no_gate_matches_the_reference() -> None:
    _check_against_reference(None)


def test_no_gate_means_no_gate_modules_and_no_gate_parameters() -> None:
    attn = Attention(BACKBONE, Architecture())
    assert attn.gates() == []
    assert sorted(n for n, _ in attn.named_parameters()) == [
        "k_norm.weight", "q_norm.weight", "wk.weight", "wo.weight", "wq.weight", "wv.weight",
    ]


def _scores(attn: Attention) -> torch.Tensor:
    """The scores the (single) gate applies, on a random input, via its hook point."""
    captured = []
    (gate,) = attn.gates()
    handle = gate.scores_out.register_forward_hook(lambda m, i, out: captured.append(out))
    attn(*_inputs(seed=3, dtype=next(attn.parameters()).dtype))
    handle.remove()
    return captured[0]


@pytest.mark.parametrize("position", list(Position))
def test_zero_weight_and_bias_2_start_every_score_at_sigmoid_2(position: Position) -> None:
    spec = GateSpec(position, init=GateInit(weight=WeightInit.ZERO, bias=2.0))
    scores = _scores(Attention(BACKBONE, Architecture(gate=spec)).double())
    torch.testing.assert_close(scores, torch.full_like(scores, ref.sigmoid(torch.tensor(2.0))))


def test_an_input_independent_gate_starts_at_one_half_and_ignores_x() -> None:
    spec = GateSpec(input=GateInput.INDEPENDENT)
    attn = Attention(BACKBONE, Architecture(gate=spec)).double()
    torch.testing.assert_close(_scores(attn), torch.full((1, 1, 4, 8), 0.5, dtype=torch.float64))


def test_an_input_dependent_gate_starts_normal_with_the_given_std() -> None:
    torch.manual_seed(0)
    attn = Attention(dataclasses.replace(BACKBONE, d_model=256), Architecture(gate=GateSpec()))
    (gate,) = attn.gates()
    assert isinstance(gate, Gate)
    weight = gate.logits.proj.weight
    assert weight.shape == (4 * 8, 256)
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert gate.logits.proj.bias is None


BACKEND_SPECS = {
    "no-gate": (None, None),
    "g1-elementwise": (GateSpec(), None),
    "g2-headwise-shared": (GateSpec(Position.G2, Granularity.HEADWISE, Sharing.HEAD_SHARED), None),
    "g3-additive-silu": (
        GateSpec(Position.G3, combine=Combine.ADDITIVE, activation=Activation.SILU), None,
    ),
    "g5-independent": (GateSpec(Position.G5, input=GateInput.INDEPENDENT), None),
    "group-rmsnorm": (None, SdpaControl.GROUP_RMSNORM),
}


@pytest.mark.parametrize("name", list(BACKEND_SPECS))
def test_backends_agree_with_each_other_and_the_reference(name: str) -> None:
    gate, control = BACKEND_SPECS[name]
    x, cos, sin = _inputs(seed=4)
    outputs = {}
    auto = resolve_kernel(KernelChoice.AUTO, "cpu", half_precision=False)
    assert auto is Kernel.SDPA  # flash-attn runs on CUDA in bf16 only
    for kernel in (Kernel.SDPA, Kernel.EXPLICIT):
        outputs[kernel], probs = _built(gate, control, kernel)(x, cos, sin)
        assert probs is None
    torch.testing.assert_close(outputs[Kernel.EXPLICIT], outputs[Kernel.SDPA], **TOL)

    attn = _built(gate, control)
    with_probs, probs = attn(x, cos, sin, return_probs=True)
    want, want_probs = ref.attention(BACKBONE, gate, control, ref.Params(attn), x)
    torch.testing.assert_close(with_probs, want, **TOL)
    assert probs is not None and probs.shape == (B, BACKBONE.n_heads, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (probs[..., future] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, BACKBONE.n_heads, T, dtype=probs.dtype))
    torch.testing.assert_close(probs.double(), want_probs, **TOL)


GRADIENT_SPECS = [
    GateSpec(),
    GateSpec(Position.G1, Granularity.HEADWISE, activation=Activation.NS_SIGMOID),
    GateSpec(Position.G2, sharing=Sharing.HEAD_SHARED, init=GateInit(bias=2.0)),
    GateSpec(Position.G3, combine=Combine.ADDITIVE, activation=Activation.IDENTITY),
    GateSpec(Position.G4, Granularity.HEADWISE, input=GateInput.INDEPENDENT),
    GateSpec(Position.G5, activation=Activation.SILU),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("gate", GRADIENT_SPECS, ids=_gate_id)
def test_every_parameter_gets_a_finite_gradient(gate: GateSpec, dtype: torch.dtype) -> None:
    attn = _built(gate, dtype=dtype)
    x, cos, sin = _inputs(seed=5, dtype=dtype)
    x.requires_grad_(True)
    attn(x, cos, sin)[0].square().mean().backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("gate", GRADIENT_SPECS, ids=_gate_id)
def test_gradients_match_the_reference(gate: GateSpec) -> None:
    attn = _built(gate)
    x, cos, sin = _inputs(seed=6)
    generator = torch.Generator().manual_seed(7)
    weights = torch.randn(B, T, BACKBONE.d_model, generator=generator, dtype=torch.float64)
    got = torch.autograd.grad((attn(x, cos, sin)[0] * weights).sum(), list(attn.parameters()))
    out, _ = ref.attention(BACKBONE, gate, None, ref.Params(attn), x)
    want = torch.autograd.grad((out * weights).sum(), list(attn.parameters()))
    for (name, _), g, w in zip(attn.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL, msg=lambda m, name=name: f"{name}: {m}")
