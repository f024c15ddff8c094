"""The numerics of a run: device type, precision, attention kernel family and TF32 matmuls.

They change a run's numbers, so they are part of its identity (a bf16 GPU run of a setting is
not its fp32 CPU run) and are logged on every run. ``resolve_numerics`` turns what a user asks
for (``auto`` included) into what this machine will do, or says why it cannot.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Any

import torch

from gatelab.model.attention_ops import Kernel, KernelChoice, resolve_kernel


class DeviceType(enum.StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    """bf16 autocast of the forward pass; weights, optimizer state and loss stay fp32."""


class PrecisionChoice(enum.StrEnum):
    AUTO = "auto"
    """bf16 on CUDA; fp32 on CPU, where bf16 autocast is ~17x slower (no native bf16)."""
    FP32 = "fp32"
    BF16 = "bf16"


@dataclass(frozen=True)
class Numerics:
    device_type: DeviceType
    precision: Precision
    kernel: Kernel
    tf32: bool = False
    """fp32 matrix products (those autocast leaves in fp32, and all of an fp32 run) in TF32
    on the tensor cores: on CUDA; never on CPU, where runs recorded before this field ran."""

    def as_dict(self) -> dict[str, Any]:
        return {"device_type": self.device_type.value, "precision": self.precision.value,
                "kernel": self.kernel.value, "tf32": self.tf32}

    def apply(self) -> None:
        """Set the process-wide matmul precision these numerics need (TF32 on CUDA)."""
        if self.device_type is DeviceType.CUDA:
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of the forward pass."""
        if self.precision is Precision.BF16:
            return torch.autocast(self.device_type.value, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def device_type_of(device: str) -> DeviceType:
    """``auto`` -> ``cuda`` where CUDA is available, else ``cpu``; ``cuda:N`` -> ``cuda``."""
    if device == "auto":
        return DeviceType.CUDA if torch.cuda.is_available() else DeviceType.CPU
    kind = device.split(":", 1)[0]
    if kind not in DeviceType.__members__.values():
        raise ValueError(f"device {device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
    if kind == DeviceType.CUDA and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here "
                         f"(torch {torch.__version__}); use --device cpu or auto")
    return DeviceType(kind)


def resolve_numerics(device: str = "auto", precision: PrecisionChoice | str = "auto",
                     backend: KernelChoice | str = "auto") -> Numerics:
    """What this machine will do for the asked device, precision and attention backend."""
    device_type = device_type_of(device)
    choice = PrecisionChoice(precision)
    if choice is PrecisionChoice.AUTO:
        prec = Precision.BF16 if device_type is DeviceType.CUDA else Precision.FP32
    else:
        prec = Precision(choice.value)
    kernel = resolve_kernel(backend, device_type.value, prec is Precision.BF16)
    return Numerics(device_type, prec, kernel, tf32=device_type is DeviceType.CUDA)
