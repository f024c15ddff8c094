"""Weight initialisation shared by every module: normal(0, std), as the paper's code does."""

from __future__ import annotations

from torch import nn

DEFAULT_STD = 0.02


def linear(d_in: int, d_out: int, std: float = DEFAULT_STD, bias: bool = False) -> nn.Linear:
    """A bias-free (by default) linear layer with normal(0, ``std``) weights."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer
