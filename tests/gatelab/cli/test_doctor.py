"""``gatelab doctor``: versions, capabilities and the attention kernel of each variant."""

from __future__ import annotations

import functools

import pytest
import torch

from gatelab.cli import doctor
from gatelab.cli.main import main
from gatelab.model.attention_ops import KERNELS, Kernel, flash_available
from gatelab.registry.loader import load_all_valid
from gatelab.runners.run import numerics as numerics_module
from gatelab.runners.run.numerics import DeviceType, Numerics, Precision


def rows_of(out: str) -> dict[str, tuple[str, str]]:
    """variant -> (size, kernel) from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("variant ")) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        variant, size, kernel = line.split(None, 2)
        rows[variant] = (size, kernel)
    return rows


def test_doctor_prints_versions_capabilities_and_a_kernel_per_variant(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"torch:       {torch.__version__}" in out
    assert ("device:      cuda" if torch.cuda.is_available() else "device:      cpu") in out
    assert ("flash-attn:  not installed" in out) is not flash_available()
    assert "numerics:    cpu, fp32, sdpa attention" in out or torch.cuda.is_available()
    rows = rows_of(out)
    specs, _ = load_all_valid()
    assert set(rows) == {s.id for s in specs}
    assert rows["baseline"] == ("tiny", "sdpa" if not torch.cuda.is_available() else
                                rows["baseline"][1])
    assert rows["more-experts"][0] == "tiny-moe"


def test_on_a_gpu_with_flash_attn_softmax_variants_use_flash(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    flash = Numerics(DeviceType.CUDA, Precision.BF16, Kernel.FLASH)
    monkeypatch.setattr(numerics_module, "resolve_numerics", lambda *a: flash)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    rows = rows_of(out)
    assert rows["baseline"][1] == rows["g1-elementwise"][1] == "flash"
    assert all(kernel == "flash" or kernel.startswith("explicit (") for _, kernel in rows.values())
    assert "numerics:    cuda, bf16, flash attention" in out
    if not torch.cuda.is_available():  # nvidia-smi "found", but torch sees no GPU
        assert "warning:     nvidia-smi finds an NVIDIA GPU, but this torch cannot use it" in out


def test_kernel_names() -> None:
    class Sigmoidish(torch.nn.Module):
        fused = False

    assert doctor.kernel_name(KERNELS[Kernel.SDPA]) == "sdpa"
    assert doctor.kernel_name(KERNELS[Kernel.FLASH]) == "flash"
    assert doctor.kernel_name(KERNELS[Kernel.EXPLICIT]) == "explicit"
    stand_in = functools.partial(lambda q, k, v, normalise: q, normalise=Sigmoidish())
    assert doctor.kernel_name(stand_in) == "explicit (Sigmoidish)"
