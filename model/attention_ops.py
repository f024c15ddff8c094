"""Causal attention kernels on (B, T, H, K) tensors with grouped-query key/values.

``sdpa`` (torch's fused kernel) is the default; ``flash`` uses flash-attn when it is installed
and the tensors are half-precision on CUDA; ``explicit`` also returns the probabilities, for the
measurements that need them (attention sink, attention maps). ``explicit`` is the reference the
other two are tested against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

try:
    from flash_attn import flash_attn_func
except ImportError:  # the optional `gpu` extra; it cannot be built without CUDA
    flash_attn_func = None


def sdpa(q_BTHK: Tensor, k_BTGK: Tensor, v_BTGK: Tensor) -> Tensor:
    out_BHTK = F.scaled_dot_product_attention(
        q_BTHK.transpose(1, 2),
        k_BTGK.transpose(1, 2),
        v_BTGK.transpose(1, 2),
        is_causal=True,
        enable_gqa=True,
    )
    return out_BHTK.transpose(1, 2)


def flash(q_BTHK: Tensor, k_BTGK: Tensor, v_BTGK: Tensor) -> Tensor:
    assert flash_attn_func is not None
    return flash_attn_func(q_BTHK, k_BTGK, v_BTGK, causal=True)


def explicit(q_BTHK: Tensor, k_BTGK: Tensor, v_BTGK: Tensor) -> tuple[Tensor, Tensor]:
    """Output (B, T, H, K) and probabilities (B, H, T_query, T_key)."""
    group = q_BTHK.shape[2] // k_BTGK.shape[2]
    k_BHTK = k_BTGK.repeat_interleave(group, dim=2).transpose(1, 2)
    v_BHTK = v_BTGK.repeat_interleave(group, dim=2).transpose(1, 2)
    q_BHTK = q_BTHK.transpose(1, 2)
    scores_BHTS = (q_BHTK @ k_BHTK.transpose(-1, -2)) * q_BTHK.shape[-1] ** -0.5
    T, S = scores_BHTS.shape[-2:]
    future = torch.ones(T, S, dtype=torch.bool, device=q_BTHK.device).triu(1)
    dtype = torch.promote_types(scores_BHTS.dtype, torch.float32)
    probs_BHTS = scores_BHTS.to(dtype).masked_fill(future, float("-inf")).softmax(-1)
    out_BHTK = probs_BHTS.to(v_BHTK.dtype) @ v_BHTK
    return out_BHTK.transpose(1, 2), probs_BHTS


def flash_available() -> bool:
    return flash_attn_func is not None


def auto(q_BTHK: Tensor, k_BTGK: Tensor, v_BTGK: Tensor) -> Tensor:
    """flash-attn where it can run, torch SDPA elsewhere."""
    if flash_attn_func is not None and q_BTHK.is_cuda and q_BTHK.dtype in (
        torch.float16,
        torch.bfloat16,
    ):
        return flash(q_BTHK, k_BTGK, v_BTGK)
    return sdpa(q_BTHK, k_BTGK, v_BTGK)


def _explicit_out(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return explicit(q, k, v)[0]


BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "auto": auto,
    "sdpa": sdpa,
    "flash": flash,
    "explicit": _explicit_out,
}


def get_backend(name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: {', '.join(BACKENDS)}")
    if name == "flash" and flash_attn_func is None:
        raise ValueError(
            "attention backend 'flash' needs flash-attn: pip install -e '.[gpu]' on a CUDA "
            "machine, or use backend 'auto' (falls back to torch SDPA)"
        )
    return BACKENDS[name]
