"""The state of one training run between steps, and its step: the model, AdamW, the batch
sampler's generator, the loss-spike detector and the counters a checkpoint restores
(``state``/``load``), with the time and throughput this process measured.

``train.py`` runs the loop over it; ``checkpoint.REQUIRED_KEYS`` names what ``state`` holds.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import torch

from gatelab.metrics import Metric
from gatelab.model.build import build_model
from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.runners.data.batches import WindowStart, sample_batch, window_starts
from gatelab.runners.data.tokens import TokenData
from gatelab.runners.run.flops import (
    device_name,
    peak_flops,
    peak_memory_metrics,
    throughput_metrics,
    train_flops_per_token,
)
from gatelab.runners.run.loss import LossFn, accumulate_gradients, lm_loss, micro_batch_for
from gatelab.runners.run.measurements import Internals, SpikeDetector, measure_internals
from gatelab.runners.run.recipe import Recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.schedule import lr_at
from gatelab.runners.run.setting import RunSetting


def make_optimizer(model: GatedLM, recipe: Recipe, fused: bool = False) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2) only, not on norms and biases. ``fused``:
    one kernel for the whole update (CUDA; the CPU keeps torch's default implementation, which
    runs recorded before this option computed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                             fused=fused or None)


def compiles(recipe: Recipe, device: torch.device) -> bool:
    """Whether a run compiles its step: the recipe's ``compile``, else on CUDA only."""
    return recipe.compile if recipe.compile is not None else device.type == "cuda"


class LoopState:
    """The state of one run between steps; everything a checkpoint must restore lives here."""

    def __init__(self, setting: RunSetting, size: str | Backbone, resources: Resources,
                 data: TokenData):
        self.setting, self.resources, self.data = setting, resources, data
        self.spec, self.recipe, self.numerics = setting.spec, setting.recipe, setting.numerics
        recipe = self.recipe
        self.device = resources.torch_device()
        self.numerics.apply()
        torch.manual_seed(recipe.seed)
        self.model = build_model(self.spec, size, self.device, vocab_size=data.vocab_size,
                                 kernel=self.numerics.kernel)
        loss_fn: LossFn = functools.partial(lm_loss, self.model)
        self.loss_fn: LossFn = torch.compile(loss_fn) if compiles(recipe, self.device) else loss_fn
        self.optimizer = make_optimizer(self.model, recipe, fused=self.device.type == "cuda")
        self.micro_batch = micro_batch_for(self.device.type, recipe.micro_batch_size,
                                           recipe.batch_size, recipe.seq_len, data.vocab_size)
        self.flops_per_token = train_flops_per_token(self.model, recipe.seq_len)
        self.peak_flops = peak_flops(device_name(self.device))
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.spikes = SpikeDetector(recipe.spike_window, recipe.spike_sigma, recipe.spike_min_nats)
        self.step = 0
        self.settled = True
        """Whether the state is at a step boundary (no step, evaluation or flush half done):
        only then is it checkpointed when the run is stopped."""
        self.first_loss: float | None = None
        self.max_grad_norm = 0.0
        self.train_time_s = 0.0
        self.measure_time_s = 0.0
        """Seconds this process spent in the paper's measurements (``measure_internals``): a
        cost, not a result, so not checkpointed (a resumed run counts from its resume)."""
        self.steps_here = 0
        """Steps this process has made (a resumed run starts again at 0)."""
        self.steady_tokens, self.steady_s = 0, 0.0
        """Tokens and seconds of this process's steps after its first (which compiles and warms
        up): what ``throughput`` reports."""
        self.tokens_seen = 0
        self.recent_losses: list[float] = []
        self.since_eval: list[float] = []
        self.eot_id = (data.tokenizer.eot_id if recipe.data.window_start is WindowStart.DOCUMENT
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
        with self.numerics.autocast():
            ce = accumulate_gradients(self.loss_fn, x, y, self.micro_batch)
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
        self.since_eval.append(loss)
        return loss, lr, grad_norm, self.spikes.update(loss)

    def measure(self, batches: list[torch.Tensor]) -> Internals:
        """``measure_internals``, its time added to ``measure_time_s``."""
        start = time.perf_counter()
        internals = measure_internals(self.model, batches)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.measure_time_s += time.perf_counter() - start
        return internals

    def timed(self, tokens: int, seconds: float) -> None:
        """Count a step's time; a process's first step is left out of the throughput."""
        self.train_time_s += seconds
        if self.steps_here:
            self.steady_tokens += tokens
            self.steady_s += seconds
        self.steps_here += 1

    def throughput(self) -> dict[str, float]:
        """Tokens/s (after this process's first step; over all steps when it made one only),
        FLOPs per token, achieved FLOP/s, MFU (a known GPU), peak memory, measurement time."""
        if self.steady_s > 0:
            tokens_per_s = self.steady_tokens / self.steady_s
        else:
            tokens_per_s = self.tokens_seen / max(self.train_time_s, 1e-9)
        return {**throughput_metrics(tokens_per_s, self.flops_per_token, self.peak_flops),
                **peak_memory_metrics(self.device), Metric.MEASURE_TIME_S: self.measure_time_s}
