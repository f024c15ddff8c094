"""What a run needs of the machine it starts on, against what the machine has: refused before
anything is allocated, with both numbers and what to change.

Memory (``estimate_memory``): the model's weights, their gradients and AdamW's two moments, all
fp32 also in a bf16 run (autocast keeps the weights in fp32), so 16 bytes a parameter, counted
from the model the one builder makes (``gatelab.model.build.build_model`` on the meta device,
with the vocabulary the recipe's tokenizer gives); and the activations autograd keeps for one
micro-batch (``micro_batch_for``, as the run splits its batch), per token and layer:

- the norms' inputs and outputs (4 x ``d_model``; 8 x with sandwich norm);
- the query, key and value projections, after QK-norm and after RoPE (3 x their widths), and
  the attention's output (the query width); an explicit-path kernel (a non-softmax normaliser)
  also its scores and weights over the sequence (2 x heads x ``seq_len``);
- a gate's scores and gated output (2 x the query width);
- the FFN: SwiGLU's two projections, its activation and their product (4 x its width); an MoE
  the same for each of the ``top_k`` experts a token is routed to, with the token's copy in and
  out of them (2 x ``d_model`` each), and the router's logits and probabilities;

and once per token the embedding and the final norm (3 x ``d_model``) and, where the loss is
not chunked, the fp32 log-probabilities the cross-entropy keeps (the vocabulary). Elements
are 4 bytes in fp32, 2 in bf16. This is a floor, not a bound: the optimizer step's
temporaries, the allocator's slack, evaluation, the measurements and a compiled graph's
buffers come on top. So a run refused needs more than the machine has; a run let through may
still run short. ``tests/runners/run/test_capacity.py`` holds the count within a quarter of
what autograd saves on the meta device.

What the machine has (``free_memory``): on CUDA the device's free memory
(``torch.cuda.mem_get_info``), on CPU the memory available to a new process
(``psutil.virtual_memory().available``). CPU threads (``check_threads``): at least 1 and at most
the cores this process may run on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import psutil
import torch

from gatelab.model.attention_ops import Kernel, kernel_used
from gatelab.model.build import build_model
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import Architecture, NormPlacement
from gatelab.runners.data.tokenizer import TokenizerKind
from gatelab.runners.run.loss import CHUNK_ABOVE, CHUNK_ELEMENTS, micro_batch_for
from gatelab.runners.run.numerics import Precision
from gatelab.runners.run.recipe import Recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import RunSetting

STATE_BYTES_PER_PARAM = 16
"""fp32 weight (4), gradient (4), and AdamW's first and second moments (4 + 4)."""
BYTES_VOCAB = 257
"""The ``bytes`` tokenizer's vocabulary: 256 byte ids and end-of-text."""
GIB = 1 << 30
"""Bytes in a GiB, the unit messages state memory in."""


class CapacityError(RuntimeError):
    """A run needs more of the machine than it has; the message says both and what to do."""


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory one run's training step holds at its peak, at least (module docstring)."""

    params: int
    """Parameters of the built model (tied embeddings counted once)."""
    state_bytes: int
    """Weights, gradients and AdamW's moments: ``STATE_BYTES_PER_PARAM`` a parameter."""
    activation_bytes: int
    """What autograd keeps for one micro-batch of ``micro_batch`` sequences."""
    micro_batch: int
    """Sequences per forward and backward pass."""
    activation_bytes_per_sequence: int
    """What each sequence of a micro-batch adds to ``activation_bytes``, at most (its logits
    counted whole, as an unchunked loss keeps them)."""

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    def describe(self) -> str:
        return (f"{gib(self.total_bytes)} ({self.params:,} parameters: "
                f"{gib(self.state_bytes)} for weights, gradients and AdamW state; "
                f"{gib(self.activation_bytes)} of activations for a micro-batch of "
                f"{self.micro_batch} sequences)")


def gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB, as messages state memory."""
    return f"{n_bytes / GIB:,.1f} GiB"


def data_vocab(recipe: Recipe) -> int:
    """The vocabulary the run's tokenizer gives (BPE: the size asked for, its most)."""
    return BYTES_VOCAB if recipe.data.tokenizer is TokenizerKind.BYTES else recipe.data.vocab_size


@cache
def _built(arch: Architecture, size: str | Backbone, vocab: int) -> tuple[int, Backbone]:
    """(parameters, resolved backbone) of ``arch`` at ``size`` with ``vocab`` tokens, from the
    model built on the meta device."""
    model = build_model(arch, size, "meta", vocab_size=vocab)
    return model.num_params(), model.backbone


def activation_elements_per_token(backbone: Backbone, arch: Architecture, seq_len: int,
                                  kernel: Kernel) -> int:
    """Activation elements autograd keeps per token, all layers (the module docstring's
    terms), without the logits."""
    bb = backbone
    q_width = bb.n_heads * bb.head_dim
    kv_width = bb.n_kv_heads * bb.head_dim
    norms = (8 if arch.norm is NormPlacement.SANDWICH else 4) * bb.d_model
    attention = 3 * (q_width + 2 * kv_width) + q_width
    if kernel_used(kernel, arch.normaliser) is Kernel.EXPLICIT:
        attention += 2 * bb.n_heads * seq_len
    gate = 2 * q_width if arch.gate is not None else 0
    if bb.moe is not None:
        ffn = bb.moe.top_k * (4 * bb.moe.expert_hidden + 2 * bb.d_model) + 2 * bb.moe.n_experts
    else:
        ffn = 4 * bb.ffn_hidden
    return bb.n_layers * (norms + attention + gate + ffn) + 3 * bb.d_model


def logit_elements(tokens: int, vocab: int) -> int:
    """The fp32 log-probabilities a micro-batch of ``tokens`` keeps for its cross-entropy: all
    of them, or one slice where the loss is chunked (``loss.py``)."""
    return tokens * vocab if tokens * vocab <= CHUNK_ABOVE else CHUNK_ELEMENTS


def estimate_memory(setting: RunSetting) -> MemoryEstimate:
    """What the run of ``setting`` holds at its training step's peak, at least."""
    arch, recipe, numerics = setting.spec.architecture, setting.recipe, setting.numerics
    vocab = data_vocab(recipe)
    params, backbone = _built(arch, setting.size, vocab)
    micro = micro_batch_for(numerics.device_type.value, recipe.micro_batch_size,
                            recipe.batch_size, recipe.seq_len, vocab) or recipe.batch_size
    micro = min(micro, recipe.batch_size)
    element = 2 if numerics.precision is Precision.BF16 else 4
    per_token = activation_elements_per_token(backbone, arch, recipe.seq_len, numerics.kernel)
    layers = recipe.seq_len * per_token * element
    activations = micro * layers + logit_elements(micro * recipe.seq_len, vocab) * 4
    return MemoryEstimate(params, params * STATE_BYTES_PER_PARAM, activations, micro,
                          layers + recipe.seq_len * vocab * 4)


def free_memory(device: torch.device | str) -> tuple[int, str]:
    """(bytes free for a run on ``device`` (``cuda``: the current CUDA device), what was
    measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)} ({device})"
    return psutil.virtual_memory().available, "available RAM on this machine"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: int | None) -> None:
    """Refuse a thread count below 1 or above this machine's usable cores."""
    if threads is None:
        return
    cores = usable_cores()
    if not 1 <= threads <= cores:
        raise CapacityError(f"--threads {threads} is out of range: torch's CPU threads must be "
                            f">= 1 and at most this machine's {cores} cores; give one in that "
                            "range, or leave --threads out for torch's default")


def check_memory(name: str, estimate: MemoryEstimate, free: int, where: str) -> None:
    """Refuse a run whose ``estimate`` exceeds ``free`` bytes (``where``: what was measured),
    saying what would make it fit."""
    if estimate.total_bytes <= free:
        return
    if estimate.state_bytes + estimate.activation_bytes_per_sequence > free:
        fix = ("its weights and optimizer state alone do not fit: use a smaller size "
               "(--size, or size: in the recipe or a sweep's overrides), or a machine with "
               "more memory")
    else:
        fits = (free - estimate.state_bytes) // estimate.activation_bytes_per_sequence
        fix = (f"a micro-batch of {fits} sequences would fit: set micro_batch_size "
               f"(--set micro_batch_size={fits}, or in a sweep's overrides; the same update, "
               "not part of the run's identity), or use a smaller size")
    raise CapacityError(f"{name} needs at least {estimate.describe()}, but the machine has "
                        f"{gib(free)} ({where}): it cannot train here; {fix}")


def run_label(setting: RunSetting) -> str:
    """The run as messages name it: its variant and size."""
    size = setting.size
    shape = size if isinstance(size, str) else (
        f"{setting.recipe.size} ({size.n_layers} layers, d_model {size.d_model})")
    return f"{setting.spec.id} at size {shape}"


def check_capacity(setting: RunSetting, resources: Resources) -> MemoryEstimate:
    """Refuse the run of ``setting`` where this machine cannot hold it or thread it as
    ``resources`` ask, before anything of it is allocated; its memory estimate otherwise."""
    check_threads(resources.threads)
    estimate = estimate_memory(setting)
    check_memory(run_label(setting), estimate, *free_memory(resources.torch_device()))
    return estimate
