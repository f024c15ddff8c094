"""One training run of one variant: data, model, AdamW loop, measurements, MLflow, checkpoints.

``train(spec, recipe, resources)`` is the whole of it. A run's identity is its setting's hash
(``setting.py``). A hash already finished or diverged in the tracking store is not trained
again; an interrupted one resumes from its checkpoint into the same MLflow run. Divergence is a
result (status ``diverged``), not an exception. ``on_eval`` is called at every evaluation with
the model and the fixed validation batches, for measurements of one's own (the sink probe).
A stage (``recipe.continue_from``) starts from its finished parent's final weights
(``stages.py``); a run with ``save_weights`` logs its own at its end for later stages.
"""

from __future__ import annotations

import functools
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gatelab.contract import DONE_STATUSES, NO_VALUE, RunStatus, Tag
from gatelab.identity import IDENTITY_VERSION
from gatelab.model.build import build_model
from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import VariantSpec, architecture_dict, to_plain
from gatelab.runners.data.batches import WindowStart, eval_batches, sample_batch, window_starts
from gatelab.runners.data.tokens import TokenData, bits_per_byte, data_key, prepare_data
from gatelab.runners.run.flops import (
    device_name,
    peak_flops,
    peak_memory_metrics,
    throughput_metrics,
    train_flops_per_token,
)
from gatelab.runners.run.lease import Lease, LeaseOwner
from gatelab.runners.run.loss import (
    LossFn,
    accumulate_gradients,
    lm_loss,
    micro_batch_for,
    token_losses,
)
from gatelab.runners.run.measurements import (
    Internals,
    SpikeDetector,
    diverged,
    measure_internals,
)
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.provenance import code_hash, git_state, node_name
from gatelab.runners.run.recipe import EvalSchedule, Recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.schedule import eval_steps, lr_at
from gatelab.runners.run.setting import RunSetting, resolve_setting
from gatelab.runners.run.stages import (
    Parent,
    find_parent,
    load_parent_weights,
    log_weights,
    parent_weights,
)
from gatelab.runners.run.storage import Storage
from gatelab.runners.run.tracking import RunTracker, flatten


@dataclass
class Progress:
    """What a progress callback receives after each step."""

    step: int
    total: int
    loss: float
    tokens_per_s: float


@dataclass(frozen=True)
class EvalPoint:
    """What an ``on_eval`` callback receives at each evaluation (after the step's update)."""

    step: int
    total: int
    train_time_s: float
    """Seconds spent in training steps so far."""
    val_loss: float
    train_losses: tuple[float, ...]
    """Training losses of the steps since the previous evaluation."""
    model: GatedLM
    measure_batches: list[torch.Tensor]
    """Inputs (B, T) of the fixed validation windows the measurements use."""
    eot_id: int


INTERNALS_ARTIFACT = "internals.npz"
"""A finished run's gate-score histograms and attention maps (``Internals.arrays``)."""
IDENTITY_ARTIFACT = "identity.json"
"""What the run's hash hashes (``RunIdentity.document``)."""


@dataclass
class RunResult:
    """The outcome of one run: what ``train`` returns and what crosses the Ray boundary."""

    run_id: str | None
    """``None`` when the run failed before its MLflow run existed."""
    run_hash: str
    status: RunStatus
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    """True when the hash had already finished and nothing was trained."""
    cause: str | None = None
    """Why a failed run failed."""

    def metric(self, key: str) -> float | None:
        value = self.summary.get(key)
        return float(value) if isinstance(value, int | float) else None


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


@torch.no_grad()
def evaluate(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, numerics: Numerics, micro_batch: int | None = None) -> float:
    """Mean over ``batches`` of each batch's mean cross-entropy, computed ``micro_batch``
    sequences at a time (``None``: a batch at once)."""
    was_training = model.training
    model.eval()
    total = 0.0
    with numerics.autocast():
        for x, y in batches:
            size = micro_batch or x.shape[0]
            parts = [lm_loss(model, xs.to(device), ys.to(device))[0] * (xs.numel() / x.numel())
                     for xs, ys in zip(x.split(size), y.split(size), strict=True)]
            total += (parts[0] if len(parts) == 1 else torch.stack(parts).sum()).item()
    model.train(was_training)
    return total / len(batches)


@torch.no_grad()
def evaluate_by_position(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]],
                         device: torch.device, numerics: Numerics, buckets: int,
                         micro_batch: int | None = None) -> tuple[float, list[float]]:
    """``evaluate``'s loss (every batch the same size) and the mean loss in each of ``buckets``
    equal slices of the positions (slice ``b``: ``[b*T//n, (b+1)*T//n)``): loss against
    position, where a model read beyond its training length shows it."""
    was_training = model.training
    model.eval()
    sums_T: torch.Tensor | None = None
    with numerics.autocast():
        for x, y in batches:
            size = micro_batch or x.shape[0]
            for xs, ys in zip(x.split(size), y.split(size), strict=True):
                part_T = token_losses(model, xs.to(device), ys.to(device)).double().sum(0)
                sums_T = part_T if sums_T is None else sums_T + part_T
    model.train(was_training)
    assert sums_T is not None
    mean_T = sums_T / sum(x.shape[0] for x, _ in batches)
    T = mean_T.shape[0]
    n = min(buckets, T)
    edges = [b * T // n for b in range(n + 1)]
    means = [mean_T[lo:hi].mean().item() for lo, hi in zip(edges, edges[1:], strict=False)]
    return mean_T.mean().item(), means


def compiles(recipe: Recipe, device: torch.device) -> bool:
    """Whether a run compiles its step: the recipe's ``compile``, else on CUDA only."""
    return recipe.compile if recipe.compile is not None else device.type == "cuda"


class _Loop:
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
                **peak_memory_metrics(self.device), "measure_time_s": self.measure_time_s}


def run_tags(setting: RunSetting) -> dict[str, str]:
    """The tags that say what a run is (``gatelab.contract.Tag``), status aside."""
    spec, recipe, numerics, ident = (setting.spec, setting.recipe, setting.numerics,
                                     setting.identity)
    gate = spec.architecture.gate
    return {
        Tag.VARIANT: spec.id, Tag.RUN_HASH: ident.run_hash,
        Tag.SETTING_HASH: ident.setting_hash, Tag.LR_SETTING_HASH: ident.lr_setting_hash,
        Tag.IDENTITY_VERSION: str(IDENTITY_VERSION),
        Tag.SIZE: recipe.size, Tag.SEED: str(recipe.seed), Tag.LR: str(recipe.lr),
        Tag.POSITION: gate.position.value if gate else NO_VALUE,
        Tag.GRANULARITY: gate.granularity.value if gate else NO_VALUE,
        Tag.PAPER_ROW: spec.paper_row or NO_VALUE,
        Tag.DEVICE: numerics.device_type.value, Tag.PRECISION: numerics.precision.value,
        Tag.KERNEL: numerics.kernel.value, Tag.TORCH_VERSION: torch.__version__,
    }


def mlflow_tags(spec: VariantSpec, commit: str) -> dict[str, str]:
    """The tags the MLflow UI reads: the source (its Source column and the commit link) and the
    run's description (its Description column): the spec's description and hypothesis."""
    out = {"mlflow.source.name": "gatelab", "mlflow.source.type": "LOCAL",
           "mlflow.note.content": f"{spec.description}\n\nHypothesis: {spec.hypothesis}"}
    if commit != "unknown":
        out["mlflow.source.git.commit"] = commit
    return out


def model_summary(model: torch.nn.Module) -> str:
    """The built model as text (its modules) with its parameter count: the run's
    ``model.txt``."""
    n = sum(p.numel() for p in model.parameters())
    return f"{n:,} parameters\n\n{model}\n"


def train(
    spec: VariantSpec,
    recipe: Recipe,
    resources: Resources | None = None,
    *,
    size: str | Backbone | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_eval: Callable[[EvalPoint], None] | None = None,
    on_wait: Callable[[LeaseOwner], None] | None = None,
    tags: dict[str, str] | None = None,
) -> RunResult:
    """Train ``spec`` with ``recipe``; see the module docstring. ``size`` replaces the
    recipe's size preset (a name, or a backbone of one's own). ``tags`` are added to the
    MLflow run (a sweep marks its runs with them), also when the hash is already done.
    Another process training the same hash holds its lease (``lease.py``): this call waits
    for it (``on_wait`` is told who it is), then returns its result or resumes its run.
    A stage whose parent is missing, unfinished or without weights raises ``ParentError``."""
    resources = resources or Resources()
    client, uri = RunTracker.client_for(resources.tracking_uri)
    parent = (find_parent(client, resources.experiment, recipe.continue_from)
              if recipe.continue_from is not None else None)
    setting = resolve_setting(spec, recipe, resources.numerics(), size,
                              parent.lineage if parent else None)
    done = _recorded(client, uri, resources.experiment, setting.run_hash, tags)
    if done is not None:
        return done
    with Lease(resources.place().lease_dir, setting.run_hash).acquire(on_wait):
        # Another process may have finished this hash while we waited for its lease.
        done = _recorded(client, uri, resources.experiment, setting.run_hash, tags)
        if done is not None:
            return done
        return _train_leased(setting, resources, client, uri, on_progress, on_eval,
                             {**(parent.tags() if parent else {}), **(tags or {})}, parent)


def _recorded(client: Any, uri: str, experiment: str, rhash: str,
              tags: dict[str, str] | None) -> RunResult | None:
    """The recorded result of a hash that finished or diverged, else ``None``."""
    found = RunTracker.find(client, experiment, rhash)
    if found is None or found.data.tags.get(Tag.STATUS) not in DONE_STATUSES:
        return None
    if tags:
        RunTracker(client, found.info.run_id, uri).set_tags(tags)
    summary = {k: v for k, v in found.data.metrics.items()}
    return RunResult(found.info.run_id, rhash, RunStatus(found.data.tags[Tag.STATUS]),
                     summary, skipped=True)


def _train_leased(setting: RunSetting, resources: Resources,
                  client: Any, uri: str, on_progress: Callable[[Progress], None] | None,
                  on_eval: Callable[[EvalPoint], None] | None,
                  tags: dict[str, str] | None, parent: Parent | None) -> RunResult:
    """Train (or resume) a hash this process holds the lease of; a stage starts from its
    ``parent``'s weights (a resumed one from its checkpoint)."""
    spec, recipe, rhash = setting.spec, setting.recipe, setting.run_hash
    found = RunTracker.find(client, resources.experiment, rhash)
    run_name = f"{spec.id} lr={recipe.lr:g} seed={recipe.seed}"  # the hash stays a tag
    storage = resources.place()
    try:
        if resources.threads:
            torch.set_num_threads(resources.threads)
        data_config = setting.data_config(storage.cache_dir)
        storage.verify_data(data_key(data_config))  # the sweep's data, checked on this node
        data = prepare_data(data_config)
        loop = _Loop(setting, setting.size, resources, data)
        saved = storage.load_checkpoint(rhash)
        if saved is not None:
            loop.load(saved)
        elif parent is not None:
            load_parent_weights(loop.model, parent_weights(client, parent), parent)
    except Exception as err:  # before its MLflow run was opened: record it failed all the same
        failed = RunTracker.open(client, uri, resources.experiment, run_name,
                                 found.info.run_id if found else None)
        failed.set_tags({**run_tags(setting), **(tags or {}), Tag.NODE: node_name(),
                         Tag.FAILURE: f"{type(err).__name__}: {err}"[:5000]})
        failed.log_text("error.txt", traceback.format_exc())
        failed.close(RunStatus.FAILED, "FAILED")
        raise
    resume_id = saved["run_id"] if saved is not None else (found.info.run_id if found else None)
    tracker = RunTracker.open(client, uri, resources.experiment, run_name, resume_id)
    commit, dirty = git_state()
    config = {"spec": to_plain(spec), "recipe": to_plain(recipe),
              "backbone": to_plain(loop.model.backbone), "numerics": setting.numerics.as_dict()}
    tracker.log_params(flatten({"spec": architecture_dict(spec), "recipe": to_plain(recipe),
                                "backbone": to_plain(loop.model.backbone)}))
    tracker.set_tags({
        **run_tags(setting), Tag.STATUS: RunStatus.RUNNING,
        Tag.GIT_COMMIT: commit, Tag.GIT_DIRTY: str(dirty).lower(), Tag.DATA: data.describe(),
        Tag.CODE_HASH: code_hash(), Tag.NODE: node_name(),
        **mlflow_tags(spec, commit), **(tags or {}),
    })
    if saved is None:
        tracker.log_json("config.json", config)
        tracker.log_json(IDENTITY_ARTIFACT, setting.identity.document)
        tracker.log_text("model.txt", model_summary(loop.model))
        tracker.log_dataset(data.corpus_name, data.corpus_hash, setting.recipe.data.source,
                            "train")
    try:
        tracker.watch_system(resumed=saved is not None)  # until tracker.close, on every path
        result = _run_loop(loop, tracker, storage, on_progress, on_eval)
    except KeyboardInterrupt:
        storage.save_checkpoint(rhash, loop.state(tracker.run_id))
        tracker.close(RunStatus.INTERRUPTED, "KILLED")
        raise
    except Exception as err:
        tracker.set_tags({Tag.FAILURE: f"{type(err).__name__}: {err}"[:5000]})
        tracker.log_text("error.txt", traceback.format_exc())
        tracker.close(RunStatus.FAILED, "FAILED")
        raise
    return result


def _run_loop(loop: _Loop, tracker: RunTracker, storage: Storage,
              on_progress: Callable[[Progress], None] | None,
              on_eval: Callable[[EvalPoint], None] | None) -> RunResult:
    r, data, device = loop.recipe, loop.data, loop.device
    total = r.total_steps()
    val_batches = eval_batches(data.val, r.batch_size, r.seq_len, r.eval_batches, loop.eot_id)
    measure = [x.to(device) for x, _ in
               eval_batches(data.val, r.measure_batch_size or r.batch_size, r.seq_len,
                            r.measure_batches, loop.eot_id)]
    eval_at = eval_steps(total, r.eval_every,
                         r.eval_points if r.eval_schedule is EvalSchedule.LOG else None)
    divergence: str | None = None
    while loop.step < total and divergence is None:
        t0 = time.perf_counter()
        loss, lr, grad_norm, spike = loop.train_step(total)
        loop.timed(r.batch_size * r.seq_len, time.perf_counter() - t0)
        step = loop.step
        tokens_per_s = loop.tokens_seen / max(loop.train_time_s, 1e-9)
        tracker.metrics({"train_loss": loss, "lr": lr, "grad_norm": grad_norm}, step)
        if spike:
            tracker.metric("loss_spike", loss, step)
        assert loop.first_loss is not None
        divergence = diverged(loss, step, r.warmup_steps, loop.first_loss, r.divergence_margin)
        if on_progress is not None:
            on_progress(Progress(step, total, loss, tokens_per_s))
        if divergence is None and step in eval_at:
            val = evaluate(loop.model, val_batches, device, loop.numerics, loop.micro_batch)
            tracker.metrics(_val_metrics(val, data.bytes_per_token["val"]), step)
            if step < total:  # the final step's are part of the final measurements
                tracker.metrics(_internals_during_training(loop.measure(measure)), step)
                tracker.metrics(loop.throughput(), step)
            if on_eval is not None:
                on_eval(EvalPoint(step, total, loop.train_time_s, val, tuple(loop.since_eval),
                                  loop.model, measure, data.tokenizer.eot_id))
            loop.since_eval = []
            tracker.flush()  # live charts follow every evaluation, not only checkpoints
        if divergence is None and step % r.checkpoint_every == 0 and step < total:
            storage.save_checkpoint(loop.setting.run_hash, loop.state(tracker.run_id))
            tracker.flush()
    summary = _final_measurements(loop, tracker, divergence, measure)
    status = RunStatus.DIVERGED if divergence else RunStatus.FINISHED
    if divergence:
        tracker.set_tags({Tag.DIVERGED_STEP: str(loop.step), Tag.DIVERGENCE: divergence})
    elif r.save_weights:  # before the status: a finished run's weights are there to load
        log_weights(tracker, loop.model)
    tracker.log_json("summary.json", summary)
    tracker.close(status, "FINISHED")
    storage.drop_checkpoint(loop.setting.run_hash)
    return RunResult(tracker.run_id, loop.setting.run_hash, status, summary)


def _internals_during_training(internals: Internals) -> dict[str, float]:
    """``f_attn``, ``m_act`` and the per-head sink metrics (mean and per layer) at an evaluation
    step, so their history shows when a sink or a massive activation forms (all come from the
    one explicit-probabilities pass); gate scores only at the end."""
    metrics = internals.metrics()
    during = ("f_attn", "m_act", "sink_head_max", "sink_heads_frac", "value_drain",
              "resid_peak_first")
    return {k: v for k, v in metrics.items() if k.split(".layer")[0] in during}


def _val_metrics(val_loss: float, bytes_per_token: float) -> dict[str, float]:
    return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
            "val_bpb": bits_per_byte(val_loss, bytes_per_token)}


def _final_measurements(loop: _Loop, tracker: RunTracker, divergence: str | None,
                        measure: list[torch.Tensor]) -> dict[str, Any]:
    """The summary of a run that ended; ``measure``: the fixed batches for the internals."""
    r, data, step = loop.recipe, loop.data, loop.step
    summary: dict[str, Any] = {
        "status": RunStatus.DIVERGED.value if divergence else RunStatus.FINISHED.value,
        "steps": step,
        "loss_spikes": loop.spikes.count, "spike_score": loop.spikes.score,
        "max_grad_norm": loop.max_grad_norm,
        "train_time_s": loop.train_time_s, "params": loop.model.num_params(),
        "vocab_size": loop.model.backbone.vocab_size,
        "tokens": loop.tokens_seen,
    }
    if loop.recent_losses:  # none where a stage only evaluates (steps: 0)
        summary["train_loss_last20"] = sum(loop.recent_losses) / len(loop.recent_losses)
    if divergence:
        summary.update(diverged_step=step, divergence=divergence)
    else:
        for mult in r.long_context:
            batch = max(1, r.batch_size // mult)
            batches = eval_batches(data.val, batch, r.seq_len * mult, r.eval_batches,
                                   loop.eot_id)
            micro = max(1, loop.micro_batch // mult) if loop.micro_batch else None
            if r.position_buckets:
                loss, buckets = evaluate_by_position(loop.model, batches, loop.device,
                                                     loop.numerics, r.position_buckets, micro)
                summary[f"val_loss_ctx{mult}x"] = loss
                summary.update({f"val_loss_ctx{mult}x.pos{b}": v for b, v in enumerate(buckets)})
            else:
                summary[f"val_loss_ctx{mult}x"] = evaluate(loop.model, batches, loop.device,
                                                           loop.numerics, micro)
        summary.update(_val_metrics(summary[f"val_loss_ctx{r.long_context[0]}x"],
                                    data.bytes_per_token["val"]))
        internals = loop.measure(measure)
        summary.update(internals.metrics())
        tracker.log_arrays(INTERNALS_ARTIFACT, internals.arrays())
    summary.update(loop.throughput())
    metrics = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    tracker.metrics(metrics, step)
    return summary
