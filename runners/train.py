"""One training run of one variant: data, model, AdamW loop, measurements, MLflow, checkpoints.

``train(spec, recipe, resources)`` is the whole of it. A run's identity is ``run_hash`` (the
spec's architecture, the recipe and its seed). A hash already finished or diverged in the
tracking store is not trained again; an interrupted one resumes from its checkpoint into the
same MLflow run. Divergence is a result (status ``diverged``), not an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from model.transformer import GatedLM
from registry.hashing import content_hash
from registry.resolve import resolve_backbone
from registry.schema import VariantSpec, architecture_dict, to_plain
from runners.checkpoint import load_checkpoint, save_checkpoint
from runners.data import (
    DataConfig,
    TokenData,
    bits_per_byte,
    eval_batches,
    prepare_data,
    sample_batch,
    window_starts,
)
from runners.gitinfo import git_state
from runners.measurements import SpikeDetector, diverged, measure_internals
from runners.recipe import Recipe
from runners.run_config import Resources
from runners.schedule import lr_at
from runners.tracking import HASH_TAG, STATUS_TAG, RunTracker, flatten

DONE_STATUSES = ("finished", "diverged")


def run_hash(spec: VariantSpec, recipe: Recipe) -> str:
    """The identity of a run: architecture + recipe (seed included); no resources, no paths."""
    return content_hash({"arch": architecture_dict(spec), "recipe": to_plain(recipe)})


@dataclass
class Progress:
    """What a progress callback receives after each step."""

    step: int
    total: int
    loss: float
    tokens_per_s: float


INTERNALS_ARTIFACT = "internals.npz"
"""A finished run's gate-score histograms and attention maps (``Internals.arrays``)."""


@dataclass
class RunResult:
    run_id: str
    run_hash: str
    status: str
    """``finished``, ``diverged``, ``failed`` or ``interrupted``."""
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    """True when the hash had already finished and nothing was trained."""


def data_config(recipe: Recipe, resources: Resources) -> DataConfig:
    d = recipe.data
    return DataConfig(source=d.source, text_column=d.text_column, tokenizer=d.tokenizer,
                      vocab_size=d.vocab_size, cache_dir=str(resources.work_dir / "cache"))


def build_for_data(spec: VariantSpec, recipe: Recipe, vocab_size: int, backend: str) -> GatedLM:
    """The model at the recipe's size, its vocabulary set to the tokenizer's."""
    backbone = dataclasses.replace(resolve_backbone(spec, recipe.size), vocab_size=vocab_size)
    return GatedLM(backbone, spec, backend)


def make_optimizer(model: GatedLM, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2) only, not on norms and biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2))


def lm_loss(model: torch.nn.Module, x_BT: torch.Tensor, y_BT: torch.Tensor) -> tuple[torch.Tensor,
                                                                                     torch.Tensor]:
    """(cross-entropy in nats, MoE aux loss)."""
    out = model(x_BT)
    ce = F.cross_entropy(out.logits.flatten(0, 1).float(), y_BT.flatten())
    return ce, out.aux_loss


@torch.no_grad()
def evaluate(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    with _autocast(device):
        for x, y in batches:
            total += lm_loss(model, x.to(device), y.to(device))[0].item()
    model.train(was_training)
    return total / len(batches)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 on CUDA; fp32 on CPU, where bf16 autocast is ~17x slower (no native bf16).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Loop:
    """The state of one run between steps; everything a checkpoint must restore lives here."""

    def __init__(self, spec: VariantSpec, recipe: Recipe, resources: Resources, data: TokenData):
        self.spec, self.recipe, self.resources, self.data = spec, recipe, resources, data
        self.device = resources.torch_device()
        torch.manual_seed(recipe.seed)
        self.model = build_for_data(spec, recipe, data.vocab_size, resources.backend)
        self.model.to(self.device)
        self.step_fn: torch.nn.Module = (
            torch.compile(self.model) if recipe.compile else self.model  # type: ignore[assignment]
        )
        self.optimizer = make_optimizer(self.model, recipe)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.spikes = SpikeDetector(recipe.spike_window, recipe.spike_sigma, recipe.spike_min_nats)
        self.step = 0
        self.first_loss: float | None = None
        self.max_grad_norm = 0.0
        self.train_time_s = 0.0
        self.tokens_seen = 0
        self.recent_losses: list[float] = []
        self.eot_id = (data.tokenizer.eot_id if recipe.data.window_start == "document"
                       else None)
        """Windows open on this token (``data.window_start: document``); ``None``: anywhere."""
        self.train_starts = (window_starts(data.train, recipe.seq_len, self.eot_id)
                             if self.eot_id is not None else None)

    def state(self, run_id: str) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "spikes": self.spikes.state_dict(),
            "step": self.step, "first_loss": self.first_loss, "max_grad_norm": self.max_grad_norm,
            "train_time_s": self.train_time_s, "tokens_seen": self.tokens_seen,
            "recent_losses": self.recent_losses, "run_id": run_id,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.spikes.load_state_dict(state["spikes"])
        self.step, self.first_loss = state["step"], state["first_loss"]
        self.max_grad_norm, self.train_time_s = state["max_grad_norm"], state["train_time_s"]
        self.tokens_seen, self.recent_losses = state["tokens_seen"], list(state["recent_losses"])

    def train_step(self, total: int) -> tuple[float, float, float, bool]:
        """One optimizer step: (loss, lr, gradient norm before clipping, spike?)."""
        r = self.recipe
        lr = lr_at(self.step, r.lr, r.warmup_steps, total, r.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = sample_batch(self.data.train, r.batch_size, r.seq_len, self.generator,
                            self.train_starts)
        x, y = x.to(self.device), y.to(self.device)
        with _autocast(self.device):
            ce, aux = lm_loss(self.step_fn, x, y)
        (ce + aux).backward()
        clip = r.grad_clip if r.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = ce.item()
        self.step += 1
        self.tokens_seen += x.numel()
        if self.first_loss is None:
            self.first_loss = loss
        if math.isfinite(grad_norm):
            self.max_grad_norm = max(self.max_grad_norm, grad_norm)
        self.recent_losses = (self.recent_losses + [loss])[-20:]
        return loss, lr, grad_norm, self.spikes.update(loss)


def train(
    spec: VariantSpec,
    recipe: Recipe,
    resources: Resources | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    tags: dict[str, str] | None = None,
) -> RunResult:
    """Train ``spec`` with ``recipe``; see the module docstring. ``tags`` are added to the
    MLflow run (a sweep marks its runs with them), also when the hash is already done."""
    resources = resources or Resources()
    client, uri = RunTracker.client_for(resources.tracking_uri)
    rhash = run_hash(spec, recipe)
    found = RunTracker.find(client, resources.experiment, rhash)
    if found is not None and found.data.tags.get(STATUS_TAG) in DONE_STATUSES:
        if tags:
            RunTracker(client, found.info.run_id, uri).set_tags(tags)
        summary = {k: v for k, v in found.data.metrics.items()}
        return RunResult(found.info.run_id, rhash, found.data.tags[STATUS_TAG], summary, True)

    if resources.threads:
        torch.set_num_threads(resources.threads)
    data = prepare_data(data_config(recipe, resources))
    loop = _Loop(spec, recipe, resources, data)
    ckpt_path = resources.work_dir / "checkpoints" / rhash / "last.pt"
    saved = load_checkpoint(ckpt_path)
    if saved is not None:
        loop.load(saved)
    resume_id = saved["run_id"] if saved is not None else (found.info.run_id if found else None)
    tracker = RunTracker.open(client, uri, resources.experiment, f"{spec.id}-{rhash[:8]}",
                              resume_id)
    commit, dirty = git_state()
    config = {"spec": to_plain(spec), "recipe": to_plain(recipe),
              "backbone": to_plain(loop.model.backbone)}
    tracker.log_params(flatten({"spec": architecture_dict(spec), "recipe": to_plain(recipe),
                                "backbone": to_plain(loop.model.backbone)}))
    gate = spec.gate
    tracker.set_tags({
        "gatelab.variant": spec.id, HASH_TAG: rhash, STATUS_TAG: "running",
        "gatelab.git_commit": commit, "gatelab.git_dirty": str(dirty).lower(),
        "gatelab.size": recipe.size, "gatelab.seed": str(recipe.seed), "gatelab.lr": str(recipe.lr),
        "gatelab.position": gate.position.value if gate else "none",
        "gatelab.granularity": gate.granularity.value if gate else "none",
        "gatelab.paper_row": spec.paper_row or "none", "gatelab.data": data.describe(),
        **(tags or {}),
    })
    if saved is None:
        tracker.log_json("config.json", config)
    try:
        result = _run_loop(loop, tracker, rhash, ckpt_path, on_progress)
    except KeyboardInterrupt:
        save_checkpoint(ckpt_path, loop.state(tracker.run_id))
        tracker.close("interrupted", "KILLED")
        raise
    except Exception as err:
        tracker.set_tags({"gatelab.failure": f"{type(err).__name__}: {err}"[:5000]})
        tracker.close("failed", "FAILED")
        raise
    return result


def _run_loop(loop: _Loop, tracker: RunTracker, rhash: str, ckpt_path: Any,
              on_progress: Callable[[Progress], None] | None) -> RunResult:
    r, data, device = loop.recipe, loop.data, loop.device
    total = r.total_steps()
    val_batches = eval_batches(data.val, r.batch_size, r.seq_len, r.eval_batches, loop.eot_id)
    measure = [x.to(device) for x, _ in
               eval_batches(data.val, r.batch_size, r.seq_len, r.measure_batches, loop.eot_id)]
    bar = _progress_bar(loop, total)
    divergence: str | None = None
    while loop.step < total and divergence is None:
        t0 = time.perf_counter()
        loss, lr, grad_norm, spike = loop.train_step(total)
        loop.train_time_s += time.perf_counter() - t0
        step = loop.step
        tokens_per_s = loop.tokens_seen / max(loop.train_time_s, 1e-9)
        tracker.metrics({"train_loss": loss, "lr": lr, "grad_norm": grad_norm}, step)
        if spike:
            tracker.metric("loss_spike", loss, step)
        assert loop.first_loss is not None
        divergence = diverged(loss, step, r.warmup_steps, loop.first_loss, r.divergence_margin)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
        if on_progress is not None:
            on_progress(Progress(step, total, loss, tokens_per_s))
        if divergence is None and (step % r.eval_every == 0 or step == total):
            val = evaluate(loop.model, val_batches, device)
            tracker.metrics(_val_metrics(val, data.bytes_per_token["val"]), step)
            if step < total:  # the final step's are part of the final measurements
                tracker.metrics(_internals_during_training(loop.model, measure), step)
        if divergence is None and step % r.checkpoint_every == 0 and step < total:
            save_checkpoint(ckpt_path, loop.state(tracker.run_id))
            tracker.flush()
    if bar is not None:
        bar.close()

    summary = _final_measurements(loop, tracker, divergence, measure)
    status = "diverged" if divergence else "finished"
    if divergence:
        tracker.set_tags({"gatelab.diverged_step": str(loop.step),
                          "gatelab.divergence": divergence})
    tracker.log_json("summary.json", summary)
    tracker.close(status, "FINISHED")
    ckpt_path.unlink(missing_ok=True)
    return RunResult(tracker.run_id, rhash, status, summary)


def _internals_during_training(model: GatedLM, measure: list[torch.Tensor]
                               ) -> dict[str, float]:
    """``f_attn`` and ``m_act`` (mean and per layer) at an evaluation step, so their history
    shows when a sink or a massive activation forms; gate scores only at the end."""
    metrics = measure_internals(model, measure).metrics()
    return {k: v for k, v in metrics.items() if k.startswith(("f_attn", "m_act"))}


def _val_metrics(val_loss: float, bytes_per_token: float) -> dict[str, float]:
    return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
            "val_bpb": bits_per_byte(val_loss, bytes_per_token)}


def _final_measurements(loop: _Loop, tracker: RunTracker, divergence: str | None,
                        measure: list[torch.Tensor]) -> dict[str, Any]:
    """The summary of a run that ended; ``measure``: the fixed batches for the internals."""
    r, data, step = loop.recipe, loop.data, loop.step
    summary: dict[str, Any] = {
        "status": "diverged" if divergence else "finished", "steps": step,
        "train_loss_last20": sum(loop.recent_losses) / max(len(loop.recent_losses), 1),
        "loss_spikes": loop.spikes.count, "spike_score": loop.spikes.score,
        "max_grad_norm": loop.max_grad_norm,
        "tokens_per_s": loop.tokens_seen / max(loop.train_time_s, 1e-9),
        "train_time_s": loop.train_time_s, "params": loop.model.num_params(),
        "vocab_size": loop.model.backbone.vocab_size,
        "tokens": loop.tokens_seen,
    }
    if divergence:
        summary.update(diverged_step=step, divergence=divergence)
    else:
        for mult in r.long_context:
            batch = max(1, r.batch_size // mult)
            batches = eval_batches(data.val, batch, r.seq_len * mult, r.eval_batches,
                                   loop.eot_id)
            summary[f"val_loss_ctx{mult}x"] = evaluate(loop.model, batches, loop.device)
        summary.update(_val_metrics(summary[f"val_loss_ctx{r.long_context[0]}x"],
                                    data.bytes_per_token["val"]))
        internals = measure_internals(loop.model, measure)
        summary.update(internals.metrics())
        tracker.log_arrays(INTERNALS_ARTIFACT, internals.arrays())
    metrics = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    tracker.metrics(metrics, step)
    return summary


def _progress_bar(loop: _Loop, total: int) -> Any:
    if not loop.resources.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=loop.step, desc=loop.spec.id, unit="step",
                dynamic_ncols=True, leave=True,
                mininterval=0.2 if sys.stderr.isatty() else 30.0)
