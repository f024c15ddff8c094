"""Model FLOPs per token counted from a built model, the device's peak, MFU and peak memory.

FLOPs follow the PaLM convention (Chowdhery et al. 2022, appendix B), so MFUs compare with
published ones: a training token costs 3x its forward pass (forward, and a backward of twice
the forward); the forward costs 2 FLOPs per multiply-accumulate of every matrix the token goes
through (every linear layer, the LM head, a gate's projection; of an MoE's experts only the
``top_k`` of ``n_experts`` it is routed to; not the embedding, a lookup) plus, per attention
layer, ``4 * T * heads * head_dim`` for the scores and the weighted values over the whole
sequence (no discount for the causal mask). Elementwise work (norms, activations, softmax,
the optimizer) is not counted.

MFU is achieved model FLOP/s over the device's dense bf16 peak (``PEAK_BF16``), also for a run
in fp32 (the peak the hardware offers for this model); on CPU, and on a GPU the table does not
know, only the achieved FLOP/s is reported.

``architecture_flops_per_token`` counts a spec's training FLOPs without a model in hand (the
sweep's cost estimate), once per content: the resolved backbone, the architecture and the
sequence length, never a variant's name.
"""

from __future__ import annotations

import re
import resource
import sys

import torch
from torch import nn

from gatelab.metrics import Metric
from gatelab.model.attention import Attention
from gatelab.model.build import build_model, resolve_backbone
from gatelab.model.ffn import MoE
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import Architecture

PEAK_BF16: tuple[tuple[str, float], ...] = (
    # (a pattern of torch.cuda.get_device_name, dense bf16 FLOP/s from the vendor's data
    # sheet, tensor cores with fp32 accumulation, no sparsity). Most specific first.
    (r"GB200|B200", 2.25e15),
    (r"H200|GH200", 989.4e12),
    (r"H100.*PCIe", 756.0e12),
    (r"H100.*NVL", 835.0e12),
    (r"H100|H800", 989.4e12),
    (r"A100|A800", 312.0e12),
    (r"L40S", 362.05e12),
    (r"L40\b", 181.05e12),
    (r"\bL4\b", 121.0e12),
    (r"A10G", 70.0e12),
    (r"\bA10\b", 125.0e12),
    (r"RTX 6000 Ada", 364.25e12),
    (r"RTX A6000", 154.8e12),
    (r"RTX 4090", 165.2e12),
    (r"RTX 3090", 71.0e12),
    (r"MI300X", 1307.4e12),
)
"""Dense bf16 peaks of common accelerators, matched against the device's name in order."""


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the device called ``device_name``; ``None`` if not in the table."""
    for pattern, peak in PEAK_BF16:
        if re.search(pattern, device_name):
            return peak
    return None


def device_name(device: torch.device) -> str:
    """The accelerator's name (``torch.cuda.get_device_name``), or ``cpu``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def forward_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Forward FLOPs of one token at sequence length ``seq_len`` (see the module docstring)."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        matrices = float(sum(p.numel() for p in module.parameters(recurse=False)
                             if p.dim() >= 2))
        if isinstance(module, MoE):
            matrices *= module.top_k / module.n_experts
        total += 2.0 * matrices
        if isinstance(module, Attention):
            total += 4.0 * seq_len * module.n_heads * module.head_dim
    return total


def train_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """FLOPs of one training token: 3x the forward (PaLM's 6N plus attention)."""
    return 3.0 * forward_flops_per_token(model, seq_len)


_TRAIN_FLOPS: dict[tuple[Backbone, Architecture, int], float] = {}
"""``architecture_flops_per_token``'s counts by what they count: the resolved backbone, the
architecture and the sequence length."""


def architecture_flops_per_token(arch: Architecture, size: str | Backbone, seq_len: int
                                 ) -> float:
    """``train_flops_per_token`` of ``arch`` built at ``size`` (on the meta device), counted once
    per resolved backbone, architecture and length: two variant ids of one architecture share
    a count; an edited spec or size preset is counted anew."""
    key = (resolve_backbone(arch, size), arch, seq_len)
    if key not in _TRAIN_FLOPS:
        _TRAIN_FLOPS[key] = train_flops_per_token(build_model(arch, size, "meta"), seq_len)
    return _TRAIN_FLOPS[key]


def throughput_metrics(tokens_per_s: float, flops_per_token: float,
                       peak: float | None) -> dict[str, float]:
    """``tokens_per_s``, ``flops_per_token``, ``achieved_flops`` (FLOP/s) and, where the peak is
    known, ``mfu`` (a fraction)."""
    achieved = tokens_per_s * flops_per_token
    out: dict[str, float] = {Metric.TOKENS_PER_S: tokens_per_s,
                             Metric.FLOPS_PER_TOKEN: flops_per_token,
                             Metric.ACHIEVED_FLOPS: achieved}
    if peak is not None:
        out[Metric.MFU] = achieved / peak
    return out


def peak_memory_metrics(device: torch.device) -> dict[str, float]:
    """``peak_device_mem_gb`` (CUDA: the most allocated by tensors at once) or, on CPU,
    ``peak_rss_gb`` (the process's largest resident set, everything included); GB = 1e9 B."""
    if device.type == "cuda":
        return {Metric.PEAK_DEVICE_MEM_GB: torch.cuda.max_memory_allocated(device) / 1e9}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {Metric.PEAK_RSS_GB: rss * per_unit / 1e9}
