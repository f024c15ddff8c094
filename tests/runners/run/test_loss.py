"""The loss and its gradients are the same however they are split: gradient accumulation over
micro-batches against one batch, the chunked LM head against the whole one (float64)."""

from __future__ import annotations

import functools

import pytest
import torch

from gatelab.model.build import build_model
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.runners.run.evaluate import evaluate
from gatelab.runners.run.loop_state import make_optimizer
from gatelab.runners.run.loss import (
    CHUNK_ABOVE,
    accumulate_gradients,
    chunk_tokens_for,
    lm_loss,
)
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe

SMALL = Backbone(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64,
                 vocab_size=61)


def _model(variant: str = "g1-elementwise") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_variant(variant), SMALL, dtype=torch.float64)


def _batch(n: int, seed: int = 1, length: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(SMALL.vocab_size, (n, length + 1),
                           generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def _one_update(micro_batch: int | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(loss, parameters) after one AdamW step on an 8-sequence batch."""
    model = _model()
    optimizer = make_optimizer(model, load_recipe("tiny"))
    x, y = _batch(8)
    loss = accumulate_gradients(functools.partial(lm_loss, model), x, y, micro_batch)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("micro_batch", [1, 2, 4, 3])  # 3: micro-batches of 3, 3 and 2
def test_accumulating_micro_batches_gives_the_whole_batch_update(micro_batch: int) -> None:
    whole_loss, whole = _one_update(None)
    loss, params = _one_update(micro_batch)
    torch.testing.assert_close(loss, whole_loss, rtol=1e-12, atol=1e-12)
    moved = 0
    for got, want, start in zip(params, whole, _model().parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        moved += int(not torch.equal(want, start))
    assert moved > 0  # the update did move the parameters


def test_the_chunked_head_gives_the_whole_loss_and_gradients() -> None:
    x, y = _batch(4)
    results = []
    for chunk in (None, 5):  # 68 tokens: 13 slices of 5 and one of 3
        model = _model()
        ce, aux = lm_loss(model, x, y, chunk_tokens=chunk)
        (ce + aux).backward()
        results.append((ce.detach(), [p.grad.clone() for p in model.parameters()]))
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert whole.dtype == torch.float64
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    for got, want in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_the_loss_is_chunked_only_above_its_threshold() -> None:
    assert chunk_tokens_for(16 * 128, 4096) == 16 * 128  # the tiny run: never chunked
    n_tokens = CHUNK_ABOVE // 151_936 + 1
    assert chunk_tokens_for(n_tokens, 151_936) < n_tokens


def test_evaluating_in_micro_batches_gives_the_same_loss() -> None:
    model = _model()
    batches = [_batch(6, seed=s) for s in (2, 3)]
    cpu = resolve_numerics("cpu")
    whole = evaluate(model, batches, torch.device("cpu"), cpu)
    assert evaluate(model, batches, torch.device("cpu"), cpu, micro_batch=4) == pytest.approx(
        whole, rel=1e-12)


def test_a_cpu_batch_runs_in_cache_sized_micro_batches_unless_the_recipe_says() -> None:
    from gatelab.runners.run.loss import CPU_MICRO_BATCH_LOGITS, micro_batch_for

    # The tiny recipe: 16 x 128 tokens at vocabulary 4096 -> 4 sequences (2^21 logits).
    assert micro_batch_for("cpu", None, 16, 128, 4096) == 4
    assert 4 * 128 * 4096 <= CPU_MICRO_BATCH_LOGITS < 5 * 128 * 4096
    assert micro_batch_for("cpu", 8, 16, 128, 4096) == 8  # the recipe's choice stands
    assert micro_batch_for("cuda", None, 16, 128, 4096) is None  # a GPU takes the batch at once
    assert micro_batch_for("cpu", None, 2, 128, 4096) is None  # a batch that fits: at once
    assert micro_batch_for("cpu", None, 16, 4096, 151_936) == 1  # never below one sequence
