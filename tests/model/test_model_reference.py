"""The whole LM against the naive float64 reference, and invariants of every spec in ablations/."""

from __future__ import annotations

import dataclasses

import naive_reference as ref
import pytest
import torch
import torch.nn.functional as F

from gatelab.model.build import build_model, count_params
from gatelab.model.ffn import MoE
from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone, MoEConfig
from gatelab.registry.loader import load_all, load_variant
from gatelab.registry.presets import tiny_preset_for
from gatelab.registry.schema import (
    Activation,
    Architecture,
    Combine,
    ExpertProjections,
    GateInit,
    GateSpec,
    Granularity,
    Normaliser,
    NormaliserSpec,
    NormPlacement,
    Position,
    SdpaControl,
    Sharing,
    SwitchHeadSpec,
    VariantSpec,
    WeightInit,
)

DENSE = Backbone(
    n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64, vocab_size=50
)
MOE = dataclasses.replace(DENSE, moe=MoEConfig(n_experts=4, top_k=2, expert_hidden=16))
B, T = 2, 7

# Everything runs in float64, so agreement is to float64 rounding; a wrong semantics shows as
# an O(1) difference.
TOL = {"rtol": 1e-10, "atol": 1e-10}
SOFTMAX = NormaliserSpec()


def _spec(
    gate: GateSpec | None = None,
    norm: NormPlacement = NormPlacement.PRE,
    control: SdpaControl | None = None,
    normaliser: NormaliserSpec = SOFTMAX,
    sink_tokens: int = 0,
    switch_head: SwitchHeadSpec | None = None,
) -> VariantSpec:
    return VariantSpec(
        id="x", description="", hypothesis="", base="baseline", architecture=Architecture(
            gate=gate, norm=norm, sdpa_control=control, normaliser=normaliser,
            sink_tokens=sink_tokens, switch_head=switch_head),
    )


CASES: dict[str, tuple[VariantSpec, Backbone]] = {
    "baseline": (_spec(), DENSE),
    "g1-elementwise": (_spec(GateSpec()), DENSE),
    "g2-headwise-shared-bias": (
        _spec(GateSpec(Position.G2, Granularity.HEADWISE, Sharing.HEAD_SHARED,
                       init=GateInit(bias=2.0))),
        DENSE,
    ),
    "sandwich": (_spec(norm=NormPlacement.SANDWICH), DENSE),
    "sandwich-g5": (_spec(GateSpec(Position.G5), norm=NormPlacement.SANDWICH), DENSE),
    "group-rmsnorm": (_spec(control=SdpaControl.GROUP_RMSNORM), DENSE),
    "scale-control": (_spec(control=SdpaControl.SCALE), DENSE),
    "untied-no-qk-norm": (
        _spec(GateSpec()), dataclasses.replace(DENSE, tie_embeddings=False, qk_norm=False),
    ),
    "moe": (_spec(), MOE),
    "moe-g1-elementwise": (_spec(GateSpec()), MOE),
    "sink-token": (_spec(sink_tokens=1), DENSE),
    "sink-tokens-3-g1-sandwich": (
        _spec(GateSpec(), norm=NormPlacement.SANDWICH, sink_tokens=3), DENSE,
    ),
    "sink-logit-moe": (_spec(normaliser=NormaliserSpec(Normaliser.SINK_LOGIT)), MOE),
    "softmax-plus-one-g2": (
        _spec(GateSpec(Position.G2), normaliser=NormaliserSpec(Normaliser.SOFTMAX_PLUS_ONE)),
        DENSE,
    ),
    "clipped-softmax": (
        _spec(normaliser=NormaliserSpec(Normaliser.CLIPPED_SOFTMAX, gamma=-0.03, zeta=1.0)),
        DENSE,
    ),
    "sigmoid-sink-token": (_spec(normaliser=NormaliserSpec(Normaliser.SIGMOID), sink_tokens=1),
                           DENSE),
    "relu-no-qk-norm": (_spec(normaliser=NormaliserSpec(Normaliser.RELU)),
                        dataclasses.replace(DENSE, qk_norm=False)),
    "switch-kv-4-top-2": (_spec(switch_head=SwitchHeadSpec(ExpertProjections.KV, 4, 2)), DENSE),
    "switch-v-3-top-3-g1-moe": (
        _spec(GateSpec(), switch_head=SwitchHeadSpec(ExpertProjections.V, 3, 3)), MOE,
    ),
}


def _tokens(vocab_size: int, seed: int, length: int = T) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(vocab_size, (B, length), generator=generator)


def _built(spec: VariantSpec, backbone: Backbone, seed: int = 1) -> GatedLM:
    model = build_model(spec, backbone, dtype=torch.float64)
    ref.randomize(model, seed)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_aux_loss_match_the_reference(case: str) -> None:
    spec, backbone = CASES[case]
    model = _built(spec, backbone)
    idx = _tokens(backbone.vocab_size, seed=2)
    out = model(idx)
    params = ref.Params(model)
    logits, aux = ref.lm(backbone, spec, params, idx)
    assert out.logits.dtype == torch.float64
    torch.testing.assert_close(out.logits, logits, **TOL)
    torch.testing.assert_close(out.aux_loss.double(), aux, **TOL)
    assert params.unused() == set(), "the model has parameters the reference does not use"
    if backbone.moe is not None:
        assert aux > 0


@pytest.mark.parametrize("case", ["sink-token", "sink-tokens-3-g1-sandwich",
                                  "switch-kv-4-top-2"])
def test_gradients_of_the_whole_lm_match_the_reference(case: str) -> None:
    spec, backbone = CASES[case]
    model = _built(spec, backbone)
    idx = _tokens(backbone.vocab_size, seed=8)
    weights = torch.randn(B, T, backbone.vocab_size, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(9))
    params = list(model.parameters())
    got = torch.autograd.grad((model(idx).logits * weights).sum(), params)
    logits, _ = ref.lm(backbone, spec, ref.Params(model), idx)
    want = torch.autograd.grad((logits * weights).sum(), params)
    for (name, _), g, w in zip(model.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL, msg=lambda m, name=name: f"{name}: {m}")
    sink = dict(zip((n for n, _ in model.named_parameters()), got, strict=True)).get(
        "sink.tokens_SD")
    assert sink is None or sink.abs().sum() > 0  # the sink tokens are trained


def test_sink_tokens_are_dropped_from_the_logits_and_the_returned_weights() -> None:
    """f_attn reads the sequence's own first token: the weights returned are among the
    sequence's tokens, and what each query gave the sink token is their shortfall from 1."""
    spec, backbone = CASES["sink-token"]
    model = _built(spec, backbone)
    idx = _tokens(backbone.vocab_size, seed=10)
    out = model(idx, return_probs=True)
    assert out.logits.shape == (B, T, backbone.vocab_size)
    assert out.attn_probs is not None
    for probs in out.attn_probs:
        assert probs.shape == (B, backbone.n_heads, T, T)
        shortfall = 1 - probs.sum(-1)
        assert ((shortfall > 0) & (shortfall < 1)).all()
    torch.testing.assert_close(out.logits, model(idx).logits, **TOL)


def test_the_baseline_has_no_gate_and_the_parameters_of_the_named_baseline() -> None:
    plain = build_model(_spec(), DENSE)
    named = build_model(load_variant("baseline"), DENSE)
    assert plain.gates() == [] and named.gates() == []
    names = {n for n, _ in plain.named_parameters()}
    assert names == {n for n, _ in named.named_parameters()}
    assert not any(".attn.gate_" in n for n in names)


@pytest.mark.parametrize("position", list(Position))
def test_a_gate_only_adds_its_own_parameters(position: Position) -> None:
    base = {n for n, _ in build_model(_spec(), DENSE).named_parameters()}
    gated = build_model(_spec(GateSpec(position)), DENSE)
    assert len(gated.gates()) == DENSE.n_layers
    extra = {n for n, _ in gated.named_parameters()} - base
    assert base <= {n for n, _ in gated.named_parameters()}
    attr = ref.GATE_ATTR[position]
    assert extra == {f"blocks.{i}.attn.{attr}.logits.proj.weight" for i in range(DENSE.n_layers)}


@pytest.mark.parametrize("position", list(Position))
def test_a_zero_additive_identity_gate_leaves_the_baseline_logits_unchanged(
    position: Position,
) -> None:
    baseline = _built(_spec(), DENSE)
    zero_gate = GateSpec(
        position, combine=Combine.ADDITIVE, activation=Activation.IDENTITY,
        init=GateInit(weight=WeightInit.ZERO),
    )
    gated = build_model(_spec(zero_gate), DENSE, dtype=torch.float64)
    missing, unexpected = gated.load_state_dict(baseline.state_dict(), strict=False)
    assert unexpected == [] and len(missing) == DENSE.n_layers
    assert all(f".{ref.GATE_ATTR[position]}." in n for n in missing)
    idx = _tokens(DENSE.vocab_size, seed=3)
    torch.testing.assert_close(gated(idx).logits, baseline(idx).logits, rtol=0, atol=0)


def test_moe_aux_loss_is_the_switch_loss() -> None:
    cfg = MoEConfig(n_experts=6, top_k=2, expert_hidden=16, aux_loss_coef=0.03)
    layer = MoE(DENSE.d_model, cfg, out_std=0.02).double()
    ref.randomize(layer, seed=4)
    x = torch.randn(B, T, DENSE.d_model, dtype=torch.float64)
    y, aux = layer(x)
    want_y, want_aux = ref.moe(cfg, ref.Params(layer), "", x)
    torch.testing.assert_close(y, want_y, **TOL)
    torch.testing.assert_close(aux.double(), want_aux, **TOL)


def test_a_uniform_router_gives_an_aux_loss_of_exactly_the_coefficient() -> None:
    # f sums to 1 over experts and every p_e is 1/E, so E * sum_e f_e p_e = 1 whatever is chosen.
    cfg = MoEConfig(n_experts=5, top_k=2, expert_hidden=8, aux_loss_coef=0.07)
    layer = MoE(DENSE.d_model, cfg, out_std=0.02)
    with torch.no_grad():
        layer.router.weight.zero_()
    _, aux = layer(torch.randn(B, T, DENSE.d_model))
    assert aux.item() == pytest.approx(0.07, rel=1e-6)


SPECS = {spec.id: spec for spec in load_all()}


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_every_spec_trains_a_step_and_counts_its_built_parameters(variant: str) -> None:
    spec = SPECS[variant]
    preset = tiny_preset_for(spec)
    torch.manual_seed(0)
    model = build_model(spec, preset)
    arch = spec.architecture
    scored = int(arch.gate is not None) + int(arch.switch_head is not None)
    assert len(model.gates()) == model.backbone.n_layers * scored
    idx = _tokens(model.backbone.vocab_size, seed=5, length=16)
    out = model(idx)
    loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten()) + out.aux_loss
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    built = sum(p.numel() for p in model.parameters())
    assert count_params(spec, preset) == built == model.num_params()
