"""Rotary position embeddings in the rotate-half layout (Qwen/Llama)."""

from __future__ import annotations

import torch


def rope_tables(
    head_dim: int, seq_len: int, base: float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim), float64 (cast to the activations' dtype
    where applied)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim
    inv_freq = 1.0 / (base**exponents)
    angles_TF = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float64), inv_freq)
    angles_TK = torch.cat([angles_TF, angles_TF], dim=-1)
    return angles_TK.cos(), angles_TK.sin()


def apply_rope(x_BTHK: torch.Tensor, cos_TK: torch.Tensor, sin_TK: torch.Tensor) -> torch.Tensor:
    """Rotate each (i, i + K/2) pair of ``x`` by its position's angle."""
    half = x_BTHK.shape[-1] // 2
    rotated = torch.cat([-x_BTHK[..., half:], x_BTHK[..., :half]], dim=-1)
    cos = cos_TK[None, :, None, :].to(x_BTHK.dtype)
    sin = sin_TK[None, :, None, :].to(x_BTHK.dtype)
    return x_BTHK * cos + rotated * sin
