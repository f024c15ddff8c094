"""Causal attention kernels on (B, T, H, K) tensors with grouped-query key/values.

``sdpa`` (torch's fused kernel) is the default; ``flash`` uses flash-attn (installed, on CUDA,
in bf16); ``explicit`` computes the weights with a normaliser (``gatelab.model.normalisers``)
and also returns them, for the measurements that need them (attention sink, attention maps).
``explicit`` with ``Softmax`` is the reference the other two are tested against. The fused
kernels compute softmax only: ``kernel_used`` gives every other normaliser the explicit path,
whatever kernel is named.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gatelab.model.normalisers import Softmax
from gatelab.registry.schema import Normaliser, NormaliserSpec

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
    """flash-attn in bf16 (it takes half precision only); the output in the inputs' dtype."""
    assert flash_attn_func is not None
    dtype = q_BTHK.dtype
    half = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    out = flash_attn_func(q_BTHK.to(half), k_BTGK.to(half), v_BTGK.to(half), causal=True)
    return out.to(dtype)


Normalise = Callable[[Tensor, Tensor], Tensor]
"""``(scores_BHTS, future_TS) -> weights_BHTS``: an attention normaliser (``future_TS`` is True
where a key comes after its query)."""


def explicit(q_BTHK: Tensor, k_BTGK: Tensor, v_BTGK: Tensor, normalise: Normalise
             ) -> tuple[Tensor, Tensor]:
    """Output (B, T, H, K) and the weights ``normalise`` gives (B, H, T_query, T_key): for
    ``Softmax``, the probabilities."""
    group = q_BTHK.shape[2] // k_BTGK.shape[2]
    k_BHTK = k_BTGK.repeat_interleave(group, dim=2).transpose(1, 2)
    v_BHTK = v_BTGK.repeat_interleave(group, dim=2).transpose(1, 2)
    q_BHTK = q_BTHK.transpose(1, 2)
    scores_BHTS = (q_BHTK @ k_BHTK.transpose(-1, -2)) * q_BTHK.shape[-1] ** -0.5
    T, S = scores_BHTS.shape[-2:]
    future = torch.ones(T, S, dtype=torch.bool, device=q_BTHK.device).triu(1)
    dtype = torch.promote_types(scores_BHTS.dtype, torch.float32)
    probs_BHTS = normalise(scores_BHTS.to(dtype), future)
    out_BHTK = probs_BHTS.to(v_BHTK.dtype) @ v_BHTK
    return out_BHTK.transpose(1, 2), probs_BHTS


def flash_available() -> bool:
    return flash_attn_func is not None


class Kernel(enum.StrEnum):
    """The attention kernel family a model computes with: part of a run's numerics."""

    SDPA = "sdpa"
    FLASH = "flash"
    EXPLICIT = "explicit"


class KernelChoice(enum.StrEnum):
    """What a user asks for: a kernel, or ``auto`` (flash-attn on CUDA in bf16 where it is
    installed, torch SDPA elsewhere)."""

    AUTO = "auto"
    SDPA = "sdpa"
    FLASH = "flash"
    EXPLICIT = "explicit"


def resolve_kernel(choice: KernelChoice | str, device_type: str, half_precision: bool) -> Kernel:
    """The kernel ``choice`` means on this device; an error naming the fix where it cannot run."""
    choice = KernelChoice(choice)
    if choice is KernelChoice.AUTO:
        use_flash = flash_available() and device_type == "cuda" and half_precision
        return Kernel.FLASH if use_flash else Kernel.SDPA
    if choice is KernelChoice.FLASH and (not flash_available() or device_type != "cuda"):
        raise ValueError(
            "attention kernel 'flash' needs flash-attn on a CUDA device (pip install "
            "'.[gpu]' --no-build-isolation there); use --backend auto or sdpa elsewhere")
    return Kernel(choice.value)


def _explicit_output(q: Tensor, k: Tensor, v: Tensor, normalise: Normalise) -> Tensor:
    """``explicit``'s output alone: the kernel's signature."""
    return explicit(q, k, v, normalise)[0]


KERNELS: dict[Kernel, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    Kernel.SDPA: sdpa,
    Kernel.FLASH: flash,
    Kernel.EXPLICIT: functools.partial(_explicit_output, normalise=Softmax()),
}
"""Each kernel family's attention function for softmax (the explicit path with ``Softmax``)."""


def kernel_used(kernel: Kernel, normaliser: NormaliserSpec) -> Kernel:
    """The kernel family attention computes with: ``kernel`` for softmax, the explicit path for
    every other normaliser (the fused kernels compute softmax only)."""
    return kernel if normaliser.kind is Normaliser.SOFTMAX else Kernel.EXPLICIT


def kernel_for(kernel: Kernel, normalise: Normalise) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The attention function of ``kernel`` (see ``kernel_used``); the explicit path with
    ``normalise``."""
    if kernel is Kernel.EXPLICIT:
        return functools.partial(_explicit_output, normalise=normalise)
    return KERNELS[kernel]
