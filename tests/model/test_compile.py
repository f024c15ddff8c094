"""Every dispatch entry of the model compiles whole: one training step under
``torch.compile(fullgraph=True)``, through the runner's own loss (``lm_loss``), so no graph
break or host sync hides in its forward (a data-dependent shape, ``.item()``, ``.nonzero()``
all break a full graph). ``backend="eager"`` runs dynamo's graph capture without code
generation (seconds); G1 elementwise also goes through inductor (slow).

The model picks what it builds from tables keyed by the spec's enums (``gates.ACTIVATIONS``,
``normalisers.NORMALISERS``, ...), so a variant compiles whole when each entry it selects does.
``COMPILED`` is a set of registered variants that together select every entry any registered
variant selects (``entries``); ``test_the_compiled_variants_cover_every_dispatch_entry`` fails
when a variant or a table entry added later is not covered, and names a variant to add."""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import pkgutil

import pytest
import torch

import gatelab.model
from gatelab.model.attention_ops import Kernel
from gatelab.model.build import build_model
from gatelab.registry.loader import load_all
from gatelab.registry.presets import tiny_preset_for
from gatelab.registry.schema import VariantSpec
from gatelab.runners.run.loss import lm_loss

SPECS = {spec.id: spec for spec in load_all()}

COMPILED = ("clipped-softmax", "g1-additive-identity", "g1-additive-silu", "g1-elementwise-bias2",
            "g1-headwise-sink-logit", "g1-input-independent", "g1-ns-sigmoid", "g2-head-shared",
            "g3-elementwise", "g4-elementwise", "g5-elementwise", "more-experts",
            "relu-attention", "sandwich-norm", "sdpa-group-rmsnorm", "sdpa-scale", "sdpa-silu",
            "sigmoid-attention", "softmax-plus-one", "switch-kv-4-top-4", "switch-v-1-top-1")
"""The variants compiled: together they select every dispatch entry (21 of the 37 variants)."""

NOT_FROM_THE_SPEC: dict[type[enum.Enum], str] = {
    Kernel: "the numerics choose the kernel, not the spec: sdpa here, the explicit path for "
            "every normaliser other than softmax (covered by the Normaliser entries), flash-attn "
            "on CUDA only",
}
"""Enums that key a dispatch table of the model but are not chosen by a spec, and why."""


def entries(spec: VariantSpec) -> frozenset[str]:
    """What ``spec`` selects when it is built: every enum value in its architecture (the keys
    of the model's tables; ``Position.G3``), every optional part set or left out
    (``gate: none``), and its tiny size (``size: tiny-moe`` builds MoE experts)."""

    def walk(value: object, path: str) -> set[str]:
        found: set[str] = set()
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return found
        for f in dataclasses.fields(value):
            inner = getattr(value, f.name)
            name = f"{path}{f.name}"
            if inner is None:
                found.add(f"{name}: none")
            elif f.default is None:
                found.add(f"{name}: set")
            if isinstance(inner, enum.Enum):
                found.add(f"{type(inner).__name__}.{inner.value}")
            found |= walk(inner, f"{name}.")
        return found

    return frozenset(walk(spec.architecture, "") | {f"size: {tiny_preset_for(spec)}"})


def dispatch_tables() -> dict[str, dict[enum.Enum, object]]:
    """Every module-level table of ``gatelab.model`` keyed by an enum, by its dotted name."""
    tables = {}
    for info in pkgutil.iter_modules(gatelab.model.__path__):
        module = importlib.import_module(f"gatelab.model.{info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, dict) and value
                    and all(isinstance(key, enum.Enum) for key in value)):
                tables[f"{module.__name__}.{name}"] = value
    return tables


ENTRY_VARIANT = {entry: variant for variant in reversed(COMPILED)
                 for entry in entries(SPECS[variant])}
"""Each entry the compiled variants select, and the first of ``COMPILED`` that selects it."""


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


@functools.cache
def _compiled_and_eager(variant: str) -> tuple[tuple[float, dict[str, torch.Tensor]], ...]:
    """A variant's step compiled with dynamo's capture and eager, once per variant however
    many entries it stands for."""
    return _step(SPECS[variant], compiled=True), _step(SPECS[variant], compiled=False)


def _assert_same_step(a: tuple[float, dict[str, torch.Tensor]],
                      b: tuple[float, dict[str, torch.Tensor]]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    for name, grad in a[1].items():
        scale = b[1][name].abs().max().item()
        torch.testing.assert_close(grad, b[1][name], rtol=1e-3, atol=1e-4 * scale, msg=name)


@pytest.mark.parametrize("entry", sorted(ENTRY_VARIANT))
def test_every_dispatch_entry_trains_a_step_as_one_graph(entry: str) -> None:
    _assert_same_step(*_compiled_and_eager(ENTRY_VARIANT[entry]))


def test_the_compiled_variants_cover_every_dispatch_entry() -> None:
    selected: dict[str, list[str]] = {}
    for spec in SPECS.values():
        for entry in entries(spec):
            selected.setdefault(entry, []).append(spec.id)
    missing = {entry: sorted(ids) for entry, ids in selected.items() if entry not in ENTRY_VARIANT}
    assert not missing, ("tests/model/test_compile.py: COMPILED selects none of these entries; "
                         f"add a variant that does to COMPILED: {missing}")
    tables = dispatch_tables()
    assert len(tables) >= 8, sorted(tables)  # the introspection still finds the tables
    for table, keys in tables.items():
        kind = type(next(iter(keys)))
        if kind in NOT_FROM_THE_SPEC:
            continue
        for key in keys:
            assert f"{kind.__name__}.{key.value}" in selected, (
                f"{table}[{key!r}]: no registered variant selects it, so nothing compiles it; "
                "add an ablation that uses it (and a variant with it to COMPILED), or, if the "
                "spec does not choose this table's key, the enum to NOT_FROM_THE_SPEC with why")
    assert set(COMPILED) <= set(SPECS), sorted(set(COMPILED) - set(SPECS))


def test_the_chunked_loss_compiles_as_one_graph_and_equals_the_whole_loss() -> None:
    spec = SPECS["g1-elementwise"]
    chunked = _step(spec, compiled=True, chunk_tokens=23)  # 64 tokens: slices of 23, 23, 18
    _assert_same_step(chunked, _step(spec, compiled=False))


@pytest.mark.slow
def test_inductor_compiles_the_gate() -> None:
    """Inductor's code generation on one variant (G1 elementwise: the baseline's paths and a
    gate); dynamo's capture, which decides whether a graph is whole, is every entry's test."""
    spec = SPECS["g1-elementwise"]
    _assert_same_step(_step(spec, compiled=True, backend="inductor"),
                      _step(spec, compiled=False))
