"""The MoE's expert paths (``looped``, ``dense``, ``grouped``) each equal the one-token-at-a-time
reference, forward and gradients, and the eager path reproduces the per-expert loop that runs
were recorded with, bit for bit."""

from __future__ import annotations

import naive_reference as ref
import pytest
import torch
import torch.nn.functional as F

from gatelab.model.ffn import EXPERT_PATHS, MoE, expert_path
from gatelab.registry.backbone import MoEConfig

CFG = MoEConfig(n_experts=6, top_k=2, expert_hidden=16, aux_loss_coef=0.03)
D = 32


def _layer(dtype: torch.dtype, seed: int = 4) -> MoE:
    layer = MoE(D, CFG, out_std=0.02).to(dtype)
    ref.randomize(layer, seed=seed)
    return layer


def _x(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(3, 11, D, dtype=dtype, generator=torch.Generator().manual_seed(5))


def _recorded_loop(layer: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """The expert loop runs were recorded with before the paths existed (one ``nonzero`` per
    expert, accumulated in expert order)."""
    x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
    probs_NE = layer.router(x_ND).float().softmax(-1)
    weights_NK, experts_NK = probs_NE.topk(layer.top_k, dim=-1)
    weights_NK = (weights_NK / weights_NK.sum(-1, keepdim=True)).to(x_ND.dtype)
    y_ND = torch.zeros_like(x_ND)
    for e in range(layer.n_experts):
        token_idx, slot = (experts_NK == e).nonzero(as_tuple=True)
        xe = x_ND[token_idx]
        he = F.silu(xe @ layer.w_gate_EHD[e].T) * (xe @ layer.w_up_EHD[e].T)
        y_ND.index_add_(0, token_idx, (he @ layer.w_down_EDH[e].T) * weights_NK[token_idx, slot,
                                                                                   None])
    return y_ND.view_as(x_BTD)


@pytest.mark.parametrize("path", ["looped", "dense"])
def test_a_path_equals_the_reference_forward_and_backward(path: str) -> None:
    layer = _layer(torch.float64)
    layer.path = path
    x = _x(torch.float64).requires_grad_()
    y, aux = layer(x)
    want_y, want_aux = ref.moe(CFG, ref.Params(layer), "", x)
    torch.testing.assert_close(y, want_y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(aux, want_aux, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum() + aux, [x, *layer.parameters()])
    want = torch.autograd.grad((want_y * g).sum() + want_aux, [x, *layer.parameters()])
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_the_grouped_path_equals_the_looped_one_in_fp32() -> None:
    """``grouped_mm`` takes no float64; its CPU kernel runs fp32 (on the GPU, bf16: the device
    check, ``benchmarks/gpu_check.py``, compares it there)."""
    layer = _layer(torch.float32)
    x = _x(torch.float32)
    outputs = {}
    for path in ("grouped", "looped"):
        layer.path = path
        layer.zero_grad()
        xp = x.clone().requires_grad_()
        y, aux = layer(xp)
        (y.square().sum() + aux).backward()
        outputs[path] = (y, xp.grad, layer.w_down_EDH.grad, layer.router.weight.grad)
    for got, want in zip(outputs["grouped"], outputs["looped"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_the_eager_path_reproduces_the_recorded_loop_bit_for_bit() -> None:
    layer = _layer(torch.float32)
    x = _x(torch.float32)
    assert torch.equal(layer(x)[0], _recorded_loop(layer, x))


def test_each_call_takes_the_path_its_device_allows() -> None:
    x = torch.zeros(2, D)
    assert expert_path(x, torch.float32, (16, D)) == "looped"  # eager, CPU
    assert expert_path(x, torch.bfloat16, (16, D)) == "looped"  # grouped needs CUDA
    assert set(EXPERT_PATHS) == {"looped", "dense", "grouped"}
    traced = torch.compile(lambda t: expert_path(t, torch.float32, (16, D)) == "dense",
                           fullgraph=True, backend="eager")
    assert traced(x)
