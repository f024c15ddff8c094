"""The language-model loss of a batch, and gradient accumulation over micro-batches.

Where a batch's logits are large (``B * T * vocab`` above ``CHUNK_ABOVE`` elements: a GPU batch
at a 150k vocabulary), the LM head and the cross-entropy run a slice of tokens at a time under
activation checkpointing, so no fp32 (B, T, V) tensor exists at once, in the forward or the
backward (each slice's logits are recomputed in the backward). Below it the loss is computed
as it always was. Neither choice changes the math (only the order of a sum), so neither is part
of a run's identity; nor is the micro-batch size of gradient accumulation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gatelab.model.transformer import GatedLM

Tensor = torch.Tensor

CHUNK_ABOVE = 2**27
"""Logit elements of a batch above which the loss is chunked (2^27 fp32 = 512 MiB)."""
CHUNK_ELEMENTS = 2**25
"""Logit elements per slice of a chunked loss (2^25 fp32 = 128 MiB)."""


def lm_loss(model: GatedLM, x_BT: Tensor, y_BT: Tensor,
            chunk_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy in nats, MoE aux loss) of ``model`` on inputs ``x_BT`` and targets
    ``y_BT``; the cross-entropy in at least fp32. ``chunk_tokens``: tokens per slice of the LM
    head; ``None`` chooses (``chunk_tokens_for``). To compile a step, compile this function
    (``functools.partial(lm_loss, model)``), not the model: the chunked path calls the model's
    parts."""
    vocab = model.backbone.vocab_size
    chunk = chunk_tokens if chunk_tokens is not None else chunk_tokens_for(x_BT.numel(), vocab)
    if chunk >= x_BT.numel():
        out = model(x_BT)
        logits = out.logits.flatten(0, 1)
        return F.cross_entropy(logits.to(_loss_dtype(logits)), y_BT.flatten()), out.aux_loss
    h_BTD, aux, _ = model.final_hidden(x_BT)
    return chunked_cross_entropy(h_BTD.flatten(0, 1), model.lm_head.weight, y_BT.flatten(),
                                 chunk), aux


def token_losses(model: GatedLM, x_BT: Tensor, y_BT: Tensor) -> Tensor:
    """The cross-entropy of every target (B, T), in at least fp32, without a gradient path
    worth keeping (evaluation); the LM head runs a slice of tokens at a time as ``lm_loss``'s
    does, so no (B, T, vocab) tensor exists above ``CHUNK_ABOVE`` logits."""
    B, T = x_BT.shape
    h_ND = model.final_hidden(x_BT)[0].flatten(0, 1)
    chunk = chunk_tokens_for(B * T, model.backbone.vocab_size)
    parts = []
    for h, y in zip(h_ND.split(chunk), y_BT.flatten().split(chunk), strict=True):
        logits = model.lm_head(h)
        parts.append(F.cross_entropy(logits.to(_loss_dtype(logits)), y, reduction="none"))
    return torch.cat(parts).view(B, T)


def _loss_dtype(t: Tensor) -> torch.dtype:
    """fp32, or float64 for a float64 model (the reference tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def chunk_tokens_for(n_tokens: int, vocab: int) -> int:
    """Tokens per LM-head slice: all of them (no chunking) up to ``CHUNK_ABOVE`` logits."""
    if n_tokens * vocab <= CHUNK_ABOVE:
        return n_tokens
    return max(1, CHUNK_ELEMENTS // vocab)


def _slice_ce_sum(h_ND: Tensor, head_VD: Tensor, y_N: Tensor) -> Tensor:
    logits = F.linear(h_ND, head_VD)
    return F.cross_entropy(logits.to(_loss_dtype(logits)), y_N, reduction="sum")


def chunked_cross_entropy(h_ND: Tensor, head_VD: Tensor, y_N: Tensor, chunk: int) -> Tensor:
    """Mean cross-entropy of ``h_ND @ head_VD.T`` against ``y_N``, ``chunk`` rows at a time,
    each slice's logits recomputed in the backward instead of kept."""
    parts = [checkpoint(_slice_ce_sum, h, head_VD, y, use_reentrant=False)
             for h, y in zip(h_ND.split(chunk), y_N.split(chunk), strict=True)]
    return torch.stack(parts).sum() / y_N.numel()


CPU_MICRO_BATCH_LOGITS = 2**21
"""On a CPU, where a recipe leaves ``micro_batch_size`` unset, a batch runs in micro-batches
of at most this many logit elements (8 MiB in fp32, a share of a CPU's last-level cache), so
the LM head's logits and their gradient stay in cache instead of streaming through memory.
Measured on the tiny baseline (batch 16 x 128, vocab 4096: 4 sequences per micro-batch), one
thread: a step 7-10% faster alone, and two runs side by side slowed each other by 5% instead of
12% (``docs/benchmarks.md``, Ray parallel efficiency)."""


def micro_batch_for(device_type: str, asked: int | None, batch: int, seq_len: int,
                    vocab: int) -> int | None:
    """Sequences per micro-batch: ``asked`` where the recipe says; on a CPU otherwise as many
    as keep a micro-batch's logits within ``CPU_MICRO_BATCH_LOGITS`` (at least one); elsewhere
    ``None`` (the whole batch at once). Like ``asked``, not part of a run's identity."""
    if asked is not None or device_type != "cpu":
        return asked
    per_sequence = seq_len * vocab
    fits = max(1, CPU_MICRO_BATCH_LOGITS // per_sequence)
    return None if fits >= batch else fits


LossFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(x_BT, y_BT) -> (cross-entropy, aux loss)``: ``lm_loss`` bound to a model, maybe compiled."""


def accumulate_gradients(loss_fn: LossFn, x_BT: Tensor, y_BT: Tensor,
                         micro_batch: int | None) -> Tensor:
    """Forward and backward of the batch in micro-batches of ``micro_batch`` sequences
    (``None``: the whole batch at once), each loss weighted by its share of the batch's tokens,
    so the gradients are the whole batch's (an MoE's aux loss is each micro-batch's, weighted
    alike). Returns the batch's mean cross-entropy, detached: one tensor, so no host sync per
    micro-batch."""
    size = micro_batch or x_BT.shape[0]
    if size >= x_BT.shape[0]:
        ce, aux = loss_fn(x_BT, y_BT)
        (ce + aux).backward()
        return ce.detach()
    ce_parts = []
    for x, y in zip(x_BT.split(size), y_BT.split(size), strict=True):
        ce, aux = loss_fn(x, y)
        share = x.numel() / x_BT.numel()
        ((ce + aux) * share).backward()
        ce_parts.append(ce.detach() * share)
    return torch.stack(ce_parts).sum()
