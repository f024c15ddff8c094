"""Every registered variant compiles whole: one training step under
``torch.compile(fullgraph=True)``, through the runner's own loss (``lm_loss``), so no graph
break or host sync hides in its forward (a data-dependent shape, ``.item()``, ``.nonzero()``
all break a full graph). ``backend="eager"`` runs dynamo's graph capture without code
generation (seconds); the baseline and G1 elementwise also go through inductor (slow).

The variants are read from the registry, so a variant added later is covered as it lands."""

from __future__ import annotations

import functools

import pytest
import torch

from gatelab.model.build import build_model
from gatelab.registry.loader import load_all
from gatelab.registry.presets import tiny_preset_for
from gatelab.registry.schema import VariantSpec
from gatelab.runners.run.loss import lm_loss

SPECS = {spec.id: spec for spec in load_all()}


def _batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (2, 33), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def _step(spec: VariantSpec, compiled: bool, backend: str = "eager",
          chunk_tokens: int | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward/backward/AdamW step at the tiny size: (loss, gradients). (Parameters after
    a first Adam step would not compare: it moves each by about ``lr * sign(grad)``, so a
    gradient near 0 differing by rounding moves its parameter by up to ``lr``.)"""
    torch.manual_seed(0)
    model = build_model(spec, tiny_preset_for(spec))
    loss_fn = functools.partial(lm_loss, model, chunk_tokens=chunk_tokens)
    if compiled:
        torch._dynamo.reset()
        loss_fn = torch.compile(loss_fn, fullgraph=True, backend=backend)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ce, aux = loss_fn(*_batch(model.backbone.vocab_size))
    (ce + aux).backward()
    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        grads[name] = p.grad.clone()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return ce.item(), grads


def _assert_same_step(a: tuple[float, dict[str, torch.Tensor]],
                      b: tuple[float, dict[str, torch.Tensor]]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    for name, grad in a[1].items():
        scale = b[1][name].abs().max().item()
        torch.testing.assert_close(grad, b[1][name], rtol=1e-3, atol=1e-4 * scale, msg=name)


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_every_variant_trains_a_step_as_one_graph(variant: str) -> None:
    spec = SPECS[variant]
    _assert_same_step(_step(spec, compiled=True), _step(spec, compiled=False))


def test_the_chunked_loss_compiles_as_one_graph_and_equals_the_whole_loss() -> None:
    spec = SPECS["g1-elementwise"]
    chunked = _step(spec, compiled=True, chunk_tokens=23)  # 64 tokens: slices of 23, 23, 18
    _assert_same_step(chunked, _step(spec, compiled=False))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "g1-elementwise"])
def test_inductor_compiles_the_baseline_and_the_gate(variant: str) -> None:
    spec = SPECS[variant]
    _assert_same_step(_step(spec, compiled=True, backend="inductor"),
                      _step(spec, compiled=False))
