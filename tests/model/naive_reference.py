"""Naive float64 references for the model package, written from the paper, not from ``model/``.

Nothing here imports from ``model/``: attention loops over batch rows and heads with the causal
mask written out, RoPE is a complex rotation of the (i, i + K/2) pairs, the MoE routes one
token at a time, every attention normaliser is written per query row from its paper's formula,
SwitchHead routes one token and head at a time, and sink tokens are concatenated before the
embeddings. Parameters are read by name through ``Params``, which records what was read so a
test can check that every parameter was used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatelab.registry.backbone import Backbone, MoEConfig
from gatelab.registry.schema import (
    Activation,
    Combine,
    ExpertProjections,
    GateInput,
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
)

Tensor = torch.Tensor


class Params:
    """A module's parameters by name; ``unused()`` lists the ones no reference read."""

    def __init__(self, module: nn.Module):
        self._all = dict(module.named_parameters())
        self._used: set[str] = set()

    def __call__(self, name: str) -> Tensor:
        self._used.add(name)
        return self._all[name]

    def unused(self) -> set[str]:
        return set(self._all) - self._used


def randomize(module: nn.Module, seed: int, std: float = 0.5) -> None:
    """Every parameter to normal(0, std) values from a seeded generator: gate scores spread over
    the activation's range and norm weights are far from ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * std)


def sigmoid(z: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


def silu(z: Tensor) -> Tensor:
    return z * sigmoid(z)


ACTIVATIONS = {
    Activation.SIGMOID: sigmoid,
    Activation.SILU: silu,
    Activation.NS_SIGMOID: lambda z: 0.5 + 0.5 * sigmoid(z),
    Activation.IDENTITY: lambda z: z,
}

# The tensor each position gates and the module attribute that holds its gate.
GATE_ATTR = {
    Position.G1: "gate_sdpa",
    Position.G2: "gate_v",
    Position.G3: "gate_k",
    Position.G4: "gate_q",
    Position.G5: "gate_out",
}


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rope_angles(head_dim: int, seq_len: int, base: float) -> Tensor:
    """(T, K/2) float64: position t times frequency base^(-2i/K) of pair i."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    t = torch.arange(seq_len, dtype=torch.float64)
    return t[:, None] * base ** (-2.0 * i / head_dim)[None, :]


def rotate(x_BTHK: Tensor, angles_TF: Tensor) -> Tensor:
    """Rotate-half RoPE: (x_i, x_{i+K/2}) is the complex number x_i + j x_{i+K/2}, times
    e^{j angle}."""
    half = x_BTHK.shape[-1] // 2
    z = torch.complex(x_BTHK[..., :half], x_BTHK[..., half:])
    angles = angles_TF[None, :, None, :]
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1)


def gate(spec: GateSpec, p: Params, prefix: str, x_BTD: Tensor, y_BTHK: Tensor) -> Tensor:
    """The paper's gate on ``y`` viewed as (B, T, H, K); its scores come from the same token's X."""
    B, T, H, K = y_BTHK.shape
    width = K if spec.granularity is Granularity.ELEMENTWISE else 1
    if spec.input is GateInput.DEPENDENT:
        logits = torch.einsum("btd,od->bto", x_BTD, p(prefix + "logits.proj.weight"))
        if spec.init.bias is not None:
            logits = logits + p(prefix + "logits.proj.bias")
        logits = logits.reshape(B, T, H, width)
    else:
        logits = p(prefix + "logits.logits_HW").reshape(1, 1, H, width).expand(B, T, H, width)
    scores = ACTIVATIONS[spec.activation](logits)
    if spec.sharing is Sharing.HEAD_SHARED:
        scores = scores.mean(dim=2, keepdim=True).expand(B, T, H, width)
    scores = scores.expand(B, T, H, K)  # headwise: the head's one score over its whole width
    if spec.combine is Combine.MULTIPLICATIVE:
        return y_BTHK * scores
    return y_BTHK + scores


def causal_softmax(scores_TS: Tensor) -> Tensor:
    """Softmax of each query's row over the keys at or before it; zeros after it."""
    T, S = scores_TS.shape
    visible = torch.arange(S)[None, :] <= torch.arange(T)[:, None]
    shifted = scores_TS - scores_TS.masked_fill(~visible, float("-inf")).amax(-1, keepdim=True)
    e = torch.where(visible, torch.exp(shifted), torch.zeros_like(shifted))
    return e / e.sum(-1, keepdim=True)


SOFTMAX = NormaliserSpec()


def normalised_row(spec: NormaliserSpec, scores_S: Tensor, t: int, sink_logit: Tensor | None
                   ) -> Tensor:
    """Query ``t``'s weights over the keys (zeros after ``t``) from its scores ``scores_S``."""
    S = scores_S.shape[0]
    visible = torch.arange(S) <= t
    zero = torch.zeros_like(scores_S)
    kind = spec.kind
    if kind in (Normaliser.SOFTMAX, Normaliser.CLIPPED_SOFTMAX):
        probs = causal_softmax(scores_S[None, :].expand(t + 1, S))[t]
        if kind is Normaliser.CLIPPED_SOFTMAX:
            assert spec.gamma is not None and spec.zeta is not None
            stretched = (spec.zeta - spec.gamma) * probs + spec.gamma
            probs = torch.minimum(torch.maximum(stretched, zero), zero + 1.0)
        return probs
    if kind in (Normaliser.SINK_LOGIT, Normaliser.SOFTMAX_PLUS_ONE):
        b = sink_logit if kind is Normaliser.SINK_LOGIT else torch.zeros((), dtype=scores_S.dtype)
        assert b is not None
        top = torch.maximum(scores_S[visible].max(), b)
        e = torch.where(visible, torch.exp(scores_S - top), zero)
        return e / (torch.exp(b - top) + e.sum())
    if kind is Normaliser.SIGMOID:
        return torch.where(visible, sigmoid(scores_S - math.log(S)), zero)
    assert kind is Normaliser.RELU
    return torch.where(visible, torch.where(scores_S > 0, scores_S, zero) / S, zero)


def switch_projection(switch: SwitchHeadSpec, router_w: Tensor, experts_EOD: Tensor,
                      x_BTD: Tensor, heads: int) -> Tensor:
    """SwitchHead's projection (B, T, G, K), one token and kv head at a time: the sum over its
    top_k experts by router score of score * (x W_e)."""
    B, T, _ = x_BTD.shape
    E = switch.n_experts
    K = experts_EOD.shape[1] // heads
    out = torch.zeros(B, T, heads, K, dtype=x_BTD.dtype)
    for b in range(B):
        for t in range(T):
            x = x_BTD[b, t]
            scores = sigmoid(router_w @ x).reshape(heads, E)
            for g in range(heads):
                chosen = sorted(range(E), key=lambda e, g=g: -scores[g, e].item())[:switch.top_k]
                for e in chosen:
                    w_e = experts_EOD[e, g * K:(g + 1) * K]
                    out[b, t, g] = out[b, t, g] + scores[g, e] * (w_e @ x)
    return out


def attention(
    bb: Backbone,
    spec: GateSpec | None,
    control: SdpaControl | None,
    p: Params,
    x_BTD: Tensor,
    prefix: str = "",
    normaliser: NormaliserSpec = SOFTMAX,
    switch: SwitchHeadSpec | None = None,
) -> tuple[Tensor, Tensor]:
    """Output (B, T, D) and weights (B, H, T, T) of one gated attention layer."""
    B, T, D = x_BTD.shape
    H, G, K = bb.n_heads, bb.n_kv_heads, bb.head_dim

    def project(name: str, heads: int) -> Tensor:
        return torch.einsum("btd,od->bto", x_BTD, p(prefix + name)).reshape(B, T, heads, K)

    switched = () if switch is None else (("v",) if switch.projections is ExpertProjections.V
                                          else ("k", "v"))

    def project_kv(name: str) -> Tensor:
        if name not in switched:
            return project(f"w{name}.weight", G)
        assert switch is not None
        router = p(prefix + f"w{switched[0]}.router.proj.weight")  # shared: first holder's name
        return switch_projection(switch, router, p(prefix + f"w{name}.experts_EOD"), x_BTD, G)

    def gated(position: Position, y: Tensor) -> Tensor:
        if spec is None or spec.position is not position:
            return y
        return gate(spec, p, prefix + GATE_ATTR[position] + ".", x_BTD, y)

    q = gated(Position.G4, project("wq.weight", H))
    k = gated(Position.G3, project_kv("k"))
    v = gated(Position.G2, project_kv("v"))
    if bb.qk_norm:
        q = rms_norm(q, p(prefix + "q_norm.weight"), bb.norm_eps)
        k = rms_norm(k, p(prefix + "k_norm.weight"), bb.norm_eps)
    angles = rope_angles(K, T, bb.rope_base)
    q, k = rotate(q, angles), rotate(k, angles)
    learned_sink = normaliser.kind is Normaliser.SINK_LOGIT

    outs, probs = [], []
    for b in range(B):
        head_outs, head_probs = [], []
        for h in range(H):
            g = h // (H // G)
            scores = (q[b, :, h] @ k[b, :, g].T) / math.sqrt(K)
            sink = p(prefix + "normalise.sink_logit_H")[h] if learned_sink else None
            attn = torch.stack([normalised_row(normaliser, scores[t], t, sink) for t in range(T)])
            head_probs.append(attn)
            head_outs.append(attn @ v[b, :, g])
        outs.append(torch.stack(head_outs, dim=1))
        probs.append(torch.stack(head_probs))
    o_BTHK, probs_BHTS = torch.stack(outs), torch.stack(probs)

    o_BTHK = gated(Position.G1, o_BTHK)
    if control is SdpaControl.GROUP_RMSNORM:
        o_BTHK = rms_norm(o_BTHK, p(prefix + "gate_sdpa.norm.weight"), bb.norm_eps)
    elif control is SdpaControl.SILU:
        o_BTHK = silu(o_BTHK)
    elif control is SdpaControl.SCALE:
        o_BTHK = 0.5 * o_BTHK
    y = torch.einsum("bto,do->btd", o_BTHK.reshape(B, T, H * K), p(prefix + "wo.weight"))
    y = gated(Position.G5, y.reshape(B, T, 1, D)).reshape(B, T, D)
    return y, probs_BHTS


def swiglu(x: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """down(silu(gate x) * up x), weights as (out, in)."""
    return w_down @ (silu(w_gate @ x) * (w_up @ x))


def moe(moe_cfg: MoEConfig, p: Params, prefix: str, x_BTD: Tensor) -> tuple[Tensor, Tensor]:
    """Top-k routed SwiGLU experts, one token at a time, and the weighted Switch loss
    ``coef * E * sum_e f_e * P_e`` (f_e: share of routed slots on e; P_e: mean router prob)."""
    E, k = moe_cfg.n_experts, moe_cfg.top_k
    router = p(prefix + "router.weight")
    w_gate, w_up = p(prefix + "w_gate_EHD"), p(prefix + "w_up_EHD")
    w_down = p(prefix + "w_down_EDH")
    tokens = x_BTD.reshape(-1, x_BTD.shape[-1])
    outputs, all_probs, chosen_counts = [], [], [0] * E
    for x in tokens:
        logits = router @ x
        probs = torch.exp(logits - logits.max())
        probs = probs / probs.sum()
        chosen = sorted(range(E), key=lambda e: -probs[e].item())[:k]
        total = sum(probs[e] for e in chosen)
        y = sum(probs[e] / total * swiglu(x, w_gate[e], w_up[e], w_down[e]) for e in chosen)
        outputs.append(y)
        all_probs.append(probs)
        for e in chosen:
            chosen_counts[e] += 1
    n_slots = len(tokens) * k
    mean_probs = torch.stack(all_probs).mean(0)
    balance = sum(chosen_counts[e] / n_slots * mean_probs[e] for e in range(E))
    aux = moe_cfg.aux_loss_coef * E * balance
    return torch.stack(outputs).reshape(x_BTD.shape), aux


def lm(bb: Backbone, spec: VariantSpec, p: Params, idx_BT: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (B, T, vocab) and the summed aux loss of the whole decoder."""
    x = p("embed.weight")[idx_BT]
    arch = spec.architecture
    n_sink = arch.sink_tokens
    if n_sink:
        sink = p("sink.tokens_SD")[None].expand(x.shape[0], n_sink, x.shape[-1])
        x = torch.cat([sink, x], dim=1)
    aux_total = x.new_zeros(())
    sandwich = arch.norm is NormPlacement.SANDWICH
    for layer in range(bb.n_layers):
        pre = f"blocks.{layer}."
        normed = rms_norm(x, p(pre + "attn_norm.weight"), bb.norm_eps)
        a, _ = attention(bb, arch.gate, arch.sdpa_control, p, normed, prefix=pre + "attn.",
                         normaliser=arch.normaliser, switch=arch.switch_head)
        if sandwich:
            a = rms_norm(a, p(pre + "attn_out_norm.weight"), bb.norm_eps)
        x = x + a
        normed = rms_norm(x, p(pre + "ffn_norm.weight"), bb.norm_eps)
        if bb.moe is None:
            f = torch.einsum(
                "btd,od->bto",
                silu(torch.einsum("btd,hd->bth", normed, p(pre + "ffn.w_gate.weight")))
                * torch.einsum("btd,hd->bth", normed, p(pre + "ffn.w_up.weight")),
                p(pre + "ffn.w_down.weight"),
            )
        else:
            f, aux = moe(bb.moe, p, pre + "ffn.", normed)
            aux_total = aux_total + aux
        if sandwich:
            f = rms_norm(f, p(pre + "ffn_out_norm.weight"), bb.norm_eps)
        x = x + f
    head = p("embed.weight") if bb.tie_embeddings else p("lm_head.weight")
    x = x[:, n_sink:]
    logits = torch.einsum("btd,vd->btv", rms_norm(x, p("final_norm.weight"), bb.norm_eps), head)
    return logits, aux_total
