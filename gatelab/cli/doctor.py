"""``gatelab doctor``: what this machine will train with, and why.

The device torch sees (and an NVIDIA GPU that a CPU build of torch cannot see), the torch, CUDA
and flash-attn versions, whether bf16 and ``torch.compile`` can be used, the numerics ``auto``
resolves to (``gatelab.runners.run.numerics``), and the attention kernel each variant's model
computes with: the resolved kernel where its normaliser is softmax, the explicit path for any
other normaliser (``gatelab.model.attention_ops.kernel_for``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from gatelab.cli.format import table
from gatelab.cli.options import Subparsers


@dataclass(frozen=True)
class VariantKernel:
    """One row of the kernel table: a variant, the size it was built at, its kernel."""

    variant: str
    """The variant's id."""
    size: str
    """The size preset it was built at (its CPU size: ``tiny``, ``tiny-moe``, ...)."""
    kernel: str
    """The kernel name (``sdpa``, ``flash``, ``explicit``), with the normaliser where the
    explicit path stands in for a fused kernel; or the error that kept the model from
    building."""


@dataclass(frozen=True)
class Diagnosis:
    """What ``gatelab doctor`` found, each field one line (or table) of its output."""

    device: str
    """``cuda``, or ``cpu (N cores)``."""
    gpus: list[str]
    """One line per CUDA device torch sees."""
    nvidia_smi: bool
    """``nvidia-smi`` is on the PATH (an NVIDIA driver is installed)."""
    torch: str
    """The torch version (``2.13.0+cpu``)."""
    cuda: str | None
    """The CUDA version torch was built with; ``None``: a CPU build."""
    flash_attn: str | None
    """The installed flash-attn version; ``None``: not installed."""
    flash_importable: bool
    """flash-attn imports and can run here (``model.attention_ops.flash_available``)."""
    bf16: str
    """Whether runs train in bf16 here, and why (a sentence)."""
    compile: str
    """Whether ``torch.compile`` can be used here, with what, and why (a sentence)."""
    numerics: str
    """What ``auto`` resolves to: device type, precision, attention kernel."""
    variants: list[VariantKernel]
    """Every valid variant's attention kernel, in the registry's order."""
    spec_errors: list[str]
    """One message per invalid spec file (it names the file and the field)."""


def kernel_name(kernel: Callable[..., object]) -> str:
    """The name of the attention function an ``Attention`` module holds."""
    from gatelab.model.attention_ops import KERNELS

    for name, fn in KERNELS.items():
        if kernel is fn:
            return name.value
    normalise = kernel.keywords.get("normalise") if isinstance(kernel, functools.partial) else None
    return "explicit" if normalise is None else f"explicit ({type(normalise).__name__})"


def variant_kernels(kernel: str) -> tuple[list[VariantKernel], list[str]]:
    """Each valid variant's attention kernel at its CPU size when ``kernel`` is resolved
    (built on the meta device: nothing is allocated); and the invalid spec files."""
    from gatelab.model.attention import Attention
    from gatelab.model.build import build_model
    from gatelab.registry.loader import load_all_valid
    from gatelab.registry.presets import tiny_preset_for

    specs, errors = load_all_valid()
    rows = []
    for spec in specs:
        size = tiny_preset_for(spec)
        try:
            model = build_model(spec, size, "meta", kernel=kernel)
            attention = model.blocks[0].get_submodule("attn")
            assert isinstance(attention, Attention)
            name = kernel_name(attention.kernel)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            name = f"does not build: {err}"
        rows.append(VariantKernel(spec.id, size, name))
    return rows, [str(e) for e in errors]


def _bf16(cuda: bool) -> str:
    import torch

    if cuda:
        ok = torch.cuda.is_bf16_supported()
        return ("supported: runs train in bf16 autocast" if ok
                else "not supported by this GPU: use --precision fp32")
    return ("autocast only, emulated: runs train in fp32 on CPU (bf16 autocast is ~17x slower "
            "without native bf16)")


def _compile(cuda: bool) -> str:
    import torch

    if not hasattr(torch, "compile"):
        return f"not available: torch {torch.__version__} has no torch.compile"
    if cuda:
        if importlib.util.find_spec("triton") is None:
            return ("not available on CUDA: triton, which inductor generates kernels with, is "
                    "missing")
        return f"available (inductor, triton {importlib.metadata.version('triton')})"
    compiler = next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None:
        return "not available on CPU: inductor needs a C++ compiler (none on the PATH)"
    return f"available (inductor, {compiler}); no speedup on CPU, ~40 s to compile"


def _flash() -> tuple[str | None, bool]:
    from gatelab.model.attention_ops import flash_available

    try:
        version: str | None = importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return version, flash_available()


def diagnose() -> Diagnosis:
    import torch

    from gatelab.runners.run.numerics import resolve_numerics

    cuda = torch.cuda.is_available()
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        p = torch.cuda.get_device_properties(i)
        gpus.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability "
                    f"{p.major}.{p.minor}")
    numerics = resolve_numerics("auto")
    flash, importable = _flash()
    variants, errors = variant_kernels(numerics.kernel.value)
    return Diagnosis(
        device="cuda" if cuda else f"cpu ({os.cpu_count()} cores)",
        gpus=gpus, nvidia_smi=shutil.which("nvidia-smi") is not None,
        torch=torch.__version__, cuda=torch.version.cuda, flash_attn=flash,
        flash_importable=importable, bf16=_bf16(cuda), compile=_compile(cuda),
        numerics=(f"{numerics.device_type.value}, {numerics.precision.value}, "
                  f"{numerics.kernel.value} attention"),
        variants=variants, spec_errors=errors)


def format_diagnosis(d: Diagnosis) -> str:
    if d.flash_attn is None:
        flash = ("not installed (optional, CUDA only: GATELAB_FLASH_ATTN=1 scripts/setup.sh on a "
                 "machine with an NVIDIA GPU)")
    else:
        flash = d.flash_attn + ("" if d.flash_importable else " (installed, but does not import)")
    lines = [
        f"device:      {d.device}",
        *(f"             {gpu}" for gpu in d.gpus),
        f"torch:       {d.torch}" + (f" (CUDA {d.cuda})" if d.cuda else " (CPU build)"),
        f"flash-attn:  {flash}",
        f"bf16:        {d.bf16}",
        f"compile:     {d.compile}",
        f"numerics:    {d.numerics} (what --device/--precision/--backend auto resolve to)",
    ]
    if d.nvidia_smi and not d.gpus:
        lines.append("warning:     nvidia-smi finds an NVIDIA GPU, but this torch cannot use it "
                     "(a CPU build, or a CUDA build the driver does not support): rerun "
                     "scripts/setup.sh, or install a CUDA build of torch that matches the driver")
    rows = [(v.variant, v.size, v.kernel) for v in d.variants]
    lines += ["", "attention kernel of each variant (built at its CPU size on the meta device):",
              table(("variant", "size", "kernel"), rows), "",
              "Softmax variants use the resolved kernel (flash-attn on CUDA in bf16 where it is "
              "installed, torch SDPA otherwise); any other normaliser runs the explicit path, "
              "which computes its weights."]
    lines += [f"invalid spec: {e}" for e in d.spec_errors]
    return "\n".join(lines)


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    return sub.add_parser("doctor", help="device, torch/CUDA/flash-attn versions, bf16 and "
                          "compile, and the attention kernel of every variant")


def run(args: argparse.Namespace) -> int:
    d = diagnose()
    print(format_diagnosis(d))
    broken = [v for v in d.variants if v.kernel.startswith("does not build")]
    if broken or d.spec_errors:
        print(f"{len(broken) + len(d.spec_errors)} variant(s) cannot be built (above)",
              file=sys.stderr)
        return 1
    return 0
