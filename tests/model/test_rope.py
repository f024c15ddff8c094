"""RoPE with YaRN scaling against a naive float64 reference written from the paper (Peng et al.
2023, arXiv 2309.00071, section 3.2-3.4), and the invariants: factor 1 is plain RoPE, and a
model built with YaRN sharpens its attention logits by exactly ``1/t``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gatelab.model.build import build_model
from gatelab.model.rope import apply_rope, rope_tables
from gatelab.registry.backbone import YarnScaling
from gatelab.registry.presets import get_preset


def naive_yarn_tables(head_dim: int, seq_len: int, base: float, s: float, L: int,
                      alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One position and one frequency at a time, as the paper writes it: theta_d =
    base^(-2d/|D|), lambda_d = 2 pi / theta_d, r(d) = L / lambda_d, gamma(r) = 0 below alpha,
    1 above beta, (r - alpha) / (beta - alpha) between; h(theta_d) = (1 - gamma) theta_d / s +
    gamma theta_d; and both cos and sin times sqrt(1/t) = 0.1 ln(s) + 1."""
    mscale = 0.1 * math.log(s) + 1
    cos = torch.zeros(seq_len, head_dim, dtype=torch.float64)
    sin = torch.zeros(seq_len, head_dim, dtype=torch.float64)
    half = head_dim // 2
    for d in range(half):
        theta = base ** (-2 * d / head_dim)
        r = L / (2 * math.pi / theta)
        gamma = 0.0 if r < alpha else 1.0 if r > beta else (r - alpha) / (beta - alpha)
        h = (1 - gamma) * theta / s + gamma * theta
        for m in range(seq_len):
            for k in (d, d + half):  # rotate-half: dims d and d + K/2 share a frequency
                cos[m, k] = math.cos(m * h) * mscale
                sin[m, k] = math.sin(m * h) * mscale
    return cos, sin


CASES = [  # (head_dim, base, factor, original_len, alpha, beta)
    (32, 10_000.0, 4.0, 64, 1.0, 32.0),
    (32, 1e6, 8.0, 256, 1.0, 32.0),
    (64, 10_000.0, 2.5, 128, 2.0, 16.0),
    (16, 500.0, 16.0, 4096, 1.0, 32.0),
]


@pytest.mark.parametrize(("head_dim", "base", "factor", "original", "alpha", "beta"), CASES)
def test_yarn_tables_match_the_naive_reference(head_dim: int, base: float, factor: float,
                                               original: int, alpha: float, beta: float) -> None:
    yarn = YarnScaling(factor=factor, original_len=original, alpha=alpha, beta=beta)
    cos, sin = rope_tables(head_dim, 96, base, yarn=yarn)
    ref_cos, ref_sin = naive_yarn_tables(head_dim, 96, base, factor, original, alpha, beta)
    torch.testing.assert_close(cos, ref_cos, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sin, ref_sin, rtol=1e-12, atol=1e-12)


def test_the_cases_cover_all_three_parts_of_the_ramp() -> None:
    """Across ``CASES`` some frequencies are kept (r > beta), some interpolated (r < alpha)
    and some blended, so the comparison above tests each branch."""
    parts = set()
    for head_dim, base, _, original, alpha, beta in CASES:
        for d in range(head_dim // 2):
            r = original / (2 * math.pi / base ** (-2 * d / head_dim))
            parts.add("interpolated" if r < alpha else "kept" if r > beta else "blended")
    assert parts == {"interpolated", "kept", "blended"}


def test_factor_one_is_plain_rope() -> None:
    plain = rope_tables(32, 200, 10_000.0)
    scaled = rope_tables(32, 200, 10_000.0, yarn=YarnScaling(factor=1.0, original_len=64))
    for a, b in zip(plain, scaled, strict=True):
        assert torch.equal(a, b)


def test_a_model_with_factor_one_computes_what_plain_rope_computes() -> None:
    tiny = get_preset("tiny")
    torch.manual_seed(0)
    plain = build_model("g1-elementwise", tiny, dtype=torch.float64)
    same = build_model("g1-elementwise", dataclasses.replace(
        tiny, yarn=YarnScaling(factor=1.0, original_len=32)), dtype=torch.float64)
    same.load_state_dict(plain.state_dict())
    idx = torch.randint(0, tiny.vocab_size, (2, 48))
    assert torch.equal(plain(idx).logits, same(idx).logits)


def test_yarn_scales_every_logit_by_one_over_t() -> None:
    """q.k after RoPE with YaRN's tables is (0.1 ln s + 1)^2 times q.k with its frequencies
    and unit magnitude: the temperature of section 3.4."""
    yarn = YarnScaling(factor=8.0, original_len=64)
    cos, sin = rope_tables(32, 40, 10_000.0, yarn=yarn)
    unit = 0.1 * math.log(8.0) + 1
    q = torch.randn(1, 40, 2, 32, dtype=torch.float64)
    k = torch.randn(1, 40, 2, 32, dtype=torch.float64)
    scaled = (apply_rope(q, cos, sin) * apply_rope(k, cos, sin)).sum(-1)
    plain = (apply_rope(q, cos / unit, sin / unit) * apply_rope(k, cos / unit, sin / unit)).sum(-1)
    torch.testing.assert_close(scaled, plain * unit**2)
