"""The attention normalisers (the sink mitigations) against the naive float64 reference: forward,
weights and gradients, alone and with a gate; and the properties each one's formula implies."""

from __future__ import annotations

import naive_reference as ref
import pytest
import torch

from gatelab.model import attention_ops
from gatelab.model.attention import Attention
from gatelab.model.attention_ops import Kernel
from gatelab.model.normalisers import SinkLogit, Softmax, SoftmaxPlusOne
from gatelab.model.rope import rope_tables
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import (
    Architecture,
    GateSpec,
    Granularity,
    Normaliser,
    NormaliserSpec,
    Position,
)

BACKBONE = Backbone(
    n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64, vocab_size=50
)
B, T = 2, 7
TOL = {"rtol": 1e-10, "atol": 1e-10}

NORMALISERS = {
    "softmax": NormaliserSpec(),
    "sink-logit": NormaliserSpec(Normaliser.SINK_LOGIT),
    "softmax-plus-one": NormaliserSpec(Normaliser.SOFTMAX_PLUS_ONE),
    "clipped-softmax": NormaliserSpec(Normaliser.CLIPPED_SOFTMAX, gamma=-0.03, zeta=1.0),
    # Stretched hard enough that random scores hit both clips.
    "clipped-softmax-wide": NormaliserSpec(Normaliser.CLIPPED_SOFTMAX, gamma=-0.3, zeta=1.5),
    "sigmoid": NormaliserSpec(Normaliser.SIGMOID),
    "relu": NormaliserSpec(Normaliser.RELU),
}
GATES = {
    "no-gate": None,
    "g1-elementwise": GateSpec(),
    "g2-headwise": GateSpec(Position.G2, Granularity.HEADWISE),
}


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, BACKBONE.d_model, generator=generator, dtype=torch.float64)
    cos, sin = rope_tables(BACKBONE.head_dim, T, BACKBONE.rope_base)
    return x, cos, sin


def _built(norm: NormaliserSpec, gate: GateSpec | None = None,
           kernel: Kernel = Kernel.SDPA) -> Attention:
    attn = Attention(BACKBONE, Architecture(gate=gate, normaliser=norm), kernel).double()
    ref.randomize(attn, seed=1)
    return attn


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("norm", list(NORMALISERS))
def test_output_and_weights_match_the_reference(norm: str, gate: str) -> None:
    spec, gate_spec = NORMALISERS[norm], GATES[gate]
    x, cos, sin = _inputs(seed=2)
    attn = _built(spec, gate_spec)
    params = ref.Params(attn)
    want, want_probs = ref.attention(BACKBONE, gate_spec, None, params, x, normaliser=spec)
    got, _ = attn(x, cos, sin)
    with_probs, probs = attn(x, cos, sin, return_probs=True)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(with_probs, want, **TOL)
    assert probs is not None
    torch.testing.assert_close(probs, want_probs, **TOL)
    assert params.unused() == set()


@pytest.mark.parametrize("gate", ["no-gate", "g1-elementwise"])
@pytest.mark.parametrize("norm", list(NORMALISERS))
def test_gradients_match_the_reference(norm: str, gate: str) -> None:
    spec, gate_spec = NORMALISERS[norm], GATES[gate]
    x, cos, sin = _inputs(seed=6)
    attn = _built(spec, gate_spec)
    x.requires_grad_(True)
    inputs = [x, *attn.parameters()]
    weights = torch.randn(B, T, BACKBONE.d_model, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(7))
    got = torch.autograd.grad((attn(x, cos, sin)[0] * weights).sum(), inputs)
    out, _ = ref.attention(BACKBONE, gate_spec, None, ref.Params(attn), x, normaliser=spec)
    want = torch.autograd.grad((out * weights).sum(), inputs)
    names = ["x", *(n for n, _ in attn.named_parameters())]
    for name, g, w in zip(names, got, want, strict=True):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, w, **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("norm", [n for n in NORMALISERS if n != "softmax"])
def test_only_softmax_runs_on_a_fused_kernel(norm: str) -> None:
    assert _built(NORMALISERS["softmax"]).kernel is attention_ops.sdpa
    for kernel in Kernel:
        assert attention_ops.kernel_used(kernel, NORMALISERS["softmax"]) is kernel
        assert attention_ops.kernel_used(kernel, NORMALISERS[norm]) is Kernel.EXPLICIT
    x, cos, sin = _inputs(seed=3)
    on_sdpa, on_explicit = (_built(NORMALISERS[norm], kernel=k)(x, cos, sin)[0]
                            for k in (Kernel.SDPA, Kernel.EXPLICIT))
    assert _built(NORMALISERS[norm]).kernel is not attention_ops.sdpa
    torch.testing.assert_close(on_sdpa, on_explicit, rtol=0, atol=0)


def _weights(norm: NormaliserSpec) -> torch.Tensor:
    x, cos, sin = _inputs(seed=4)
    probs = _built(norm)(x, cos, sin, return_probs=True)[1]
    assert probs is not None
    return probs


def test_a_virtual_key_takes_a_share_of_every_row_and_nothing_is_after_the_query() -> None:
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for name in ("sink-logit", "softmax-plus-one"):
        probs = _weights(NORMALISERS[name])
        assert (probs[..., future] == 0).all()
        sums = probs.sum(-1)
        assert ((sums > 0) & (sums < 1)).all(), name


def test_a_zero_sink_logit_is_softmax_plus_one() -> None:
    scores = torch.randn(B, 4, T, T, dtype=torch.float64)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    learned = SinkLogit(4).double()
    torch.testing.assert_close(learned(scores, future), SoftmaxPlusOne()(scores, future),
                               rtol=0, atol=0)
    with torch.no_grad():
        learned.sink_logit_H.fill_(-1e4)  # a sink nothing can reach: plain softmax
    torch.testing.assert_close(learned(scores, future), Softmax()(scores, future), **TOL)


def test_clipped_softmax_with_no_stretch_is_softmax_and_with_one_has_exact_zeros() -> None:
    plain = _weights(NORMALISERS["softmax"])
    no_stretch = NormaliserSpec(Normaliser.CLIPPED_SOFTMAX, gamma=0.0, zeta=1.0)
    torch.testing.assert_close(_weights(no_stretch), plain, rtol=0, atol=0)
    wide = _weights(NORMALISERS["clipped-softmax-wide"])
    visible = torch.ones(T, T, dtype=torch.bool).tril()
    assert (wide[..., visible] == 0).any()  # a visible key weighted exactly zero
    assert (wide[..., 0, 0] == 1).all()  # the first query's only key, clipped at 1


def test_sigmoid_and_relu_weigh_each_key_on_its_own() -> None:
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for name in ("sigmoid", "relu"):
        probs = _weights(NORMALISERS[name])
        assert (probs[..., future] == 0).all()
        assert (probs >= 0).all()
        sums = probs.sum(-1)
        assert not torch.allclose(sums, torch.ones_like(sums)), name
    relu = _weights(NORMALISERS["relu"])
    visible = torch.ones(T, T, dtype=torch.bool).tril()
    assert (relu[..., visible] == 0).any() and (relu[..., visible] <= 1).all()
