"""Rotary position embeddings in the rotate-half layout (Qwen/Llama), with optional YaRN scaling.

YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models",
arXiv 2309.00071, section 3) stretches a model trained at ``original_len`` tokens to
``factor`` times that, without training: "NTK-by-parts" interpolation divides each rotary
frequency by ``factor`` in proportion to how few times its wavelength fits into the original
context (a ramp between ``alpha`` and ``beta`` rotations), and the attention logits are
sharpened by ``1/t`` with ``sqrt(1/t) = 0.1 ln(factor) + 1``, applied by scaling both ``cos``
and ``sin`` (so both queries and keys) by ``sqrt(1/t)``.
"""

from __future__ import annotations

import math

import torch

from gatelab.registry.backbone import YarnScaling


def yarn_temperature(factor: float) -> float:
    """YaRN's ``sqrt(1/t) = 0.1 ln(s) + 1``: what queries and keys are each multiplied by."""
    return 0.1 * math.log(factor) + 1.0


def inv_frequencies(head_dim: int, base: float, yarn: YarnScaling | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The ``head_dim / 2`` rotary frequencies ``theta_d = base^(-2d/head_dim)`` (radians per
    position), float64; with ``yarn``, each is ``(1 - gamma) theta / s + gamma theta``, where
    ``gamma`` ramps from 0 (at ``alpha`` rotations over ``original_len``) to 1 (at ``beta``)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim
    theta_F = 1.0 / (base**exponents)
    if yarn is None:
        return theta_F
    rotations_F = yarn.original_len * theta_F / (2 * math.pi)  # r = L / wavelength
    gamma_F = ((rotations_F - yarn.alpha) / (yarn.beta - yarn.alpha)).clamp(0.0, 1.0)
    return (1 - gamma_F) * theta_F / yarn.factor + gamma_F * theta_F


def rope_tables(
    head_dim: int, seq_len: int, base: float, device: torch.device | str | None = None,
    yarn: YarnScaling | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim), float64 (cast to the activations' dtype
    where applied); with ``yarn``, of its frequencies and scaled by its temperature."""
    inv_freq = inv_frequencies(head_dim, base, yarn, device)
    angles_TF = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float64), inv_freq)
    angles_TK = torch.cat([angles_TF, angles_TF], dim=-1)
    scale = 1.0 if yarn is None else yarn_temperature(yarn.factor)
    return angles_TK.cos() * scale, angles_TK.sin() * scale


def apply_rope(x_BTHK: torch.Tensor, cos_TK: torch.Tensor, sin_TK: torch.Tensor) -> torch.Tensor:
    """Rotate each (i, i + K/2) pair of ``x`` by its position's angle."""
    half = x_BTHK.shape[-1] // 2
    rotated = torch.cat([-x_BTHK[..., half:], x_BTHK[..., :half]], dim=-1)
    cos = cos_TK[None, :, None, :].to(x_BTHK.dtype)
    sin = sin_TK[None, :, None, :].to(x_BTHK.dtype)
    return x_BTHK * cos + rotated * sin
