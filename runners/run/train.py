"""One training run of one variant: data, model, AdamW loop, measurements, MLflow, checkpoints.

``train(spec, recipe, resources)`` is the whole of it. A run's identity is its setting's hash
(``setting.py``). A hash already finished or diverged in the tracking store is not trained
again; an interrupted one resumes from its checkpoint into the same MLflow run. Divergence is a
result (status ``diverged``), not an exception. ``on_eval`` is called at every evaluation with
the model and the fixed validation batches, for measurements of one's own (the sink probe).
A stage (``recipe.continue_from``) starts from its finished parent's final weights
(``stages.py``); a run with ``save_weights`` logs its own at its end for later stages.

SIGTERM (a preemption) and SIGINT (Ctrl-C) stop a run at its next step boundary
(``stop_signals.py``): it checkpoints there, its MLflow run ends ``KILLED`` (gatelab's
``interrupted``, with the step it reached) and ``Interrupted`` is raised (in a Ray worker a
SIGTERM ends the worker instead, which Ray reruns); the same call resumes it. Metrics are
flushed before each checkpoint, and a resumed run writes no (key, step) pair that its MLflow run
holds already (``RunTracker``), so each is recorded exactly once.

This module is the loop, read top to bottom: ``train`` finds the run's identity and its lease,
``_train_leased`` builds the loop's state (``loop_state.py``) and opens the MLflow run
(``run_record.py``), ``_run_loop`` steps, evaluates (``evaluate.py``), logs and checkpoints.
What it returns is in ``result.py``.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from gatelab.contract import Artifact, RunStatus, Tag
from gatelab.metrics import Metric
from gatelab.registry.backbone import Backbone
from gatelab.registry.schema import VariantSpec
from gatelab.runners.data.batches import eval_batches
from gatelab.runners.data.tokens import data_key, prepare_data
from gatelab.runners.run.capacity import check_capacity
from gatelab.runners.run.evaluate import (
    evaluate,
    final_evaluation,
    internals_during_training,
    val_metrics,
)
from gatelab.runners.run.kill_points import KillPoint, reached
from gatelab.runners.run.lease import Lease, LeaseOwner
from gatelab.runners.run.loop_state import LoopState
from gatelab.runners.run.measurements import diverged
from gatelab.runners.run.provenance import node_name
from gatelab.runners.run.recipe import EvalSchedule, Recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.result import EvalPoint, Progress, RunResult
from gatelab.runners.run.run_record import (
    record_start,
    recorded_result,
    run_name,
    run_tags,
)
from gatelab.runners.run.schedule import eval_steps
from gatelab.runners.run.setting import RunSetting, resolve_setting
from gatelab.runners.run.stages import (
    Parent,
    find_parent,
    load_parent_weights,
    log_weights,
    parent_weights,
)
from gatelab.runners.run.stop_signals import Interrupted, StopSignals
from gatelab.runners.run.storage import Storage
from gatelab.runners.run.tracking import RunTracker, failure_cause, note_recorded


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
    A stage whose parent is missing, unfinished or without weights raises ``ParentError``; a run
    this machine cannot hold or thread as asked, ``CapacityError`` before anything of it is
    allocated or recorded (``capacity.py``)."""
    resources = resources or Resources()
    client, uri = RunTracker.client_for(resources.tracking_uri)
    parent = (find_parent(client, resources.experiment, recipe.continue_from)
              if recipe.continue_from is not None else None)
    setting = resolve_setting(spec, recipe, resources.numerics(), size,
                              parent.lineage if parent else None)
    done = recorded_result(client, uri, resources.experiment, setting.run_hash, tags)
    if done is not None:
        return done
    check_capacity(setting, resources)  # before anything is allocated or recorded
    with Lease(resources.place().lease_dir, setting.run_hash).acquire(on_wait):
        # Another process may have finished this hash while we waited for its lease.
        done = recorded_result(client, uri, resources.experiment, setting.run_hash, tags)
        if done is not None:
            return done
        return _train_leased(setting, resources, client, uri, on_progress, on_eval,
                             {**(parent.tags() if parent else {}), **(tags or {})}, parent)


def _train_leased(setting: RunSetting, resources: Resources,
                  client: Any, uri: str, on_progress: Callable[[Progress], None] | None,
                  on_eval: Callable[[EvalPoint], None] | None,
                  tags: dict[str, str], parent: Parent | None) -> RunResult:
    """Train (or resume) a hash this process holds the lease of; a stage starts from its
    ``parent``'s weights (a resumed one from its checkpoint)."""
    rhash = setting.run_hash
    found = RunTracker.find(client, resources.experiment, rhash)
    storage = resources.place()
    try:
        if resources.threads:
            torch.set_num_threads(resources.threads)
        data_config = setting.data_config(storage.cache_dir)
        storage.verify_data(data_key(data_config))  # the sweep's data, checked on this node
        data = prepare_data(data_config)
        loop = LoopState(setting, setting.size, resources, data)
        saved = storage.load_checkpoint(rhash)
        if saved is not None:
            loop.load(saved)
        elif parent is not None:
            load_parent_weights(loop.model, parent_weights(client, parent), parent)
    except Exception as err:  # before its MLflow run was opened: record it failed all the same
        failed = RunTracker.open(client, uri, resources.experiment, run_name(setting),
                                 found.info.run_id if found else None)
        failed.fail(failure_cause(err), traceback.format_exc(),
                    {**run_tags(setting), **tags, Tag.NODE: node_name()})
        note_recorded(err, failed.run_id)
        raise
    resume_id = saved["run_id"] if saved is not None else (found.info.run_id if found else None)
    tracker = RunTracker.open(client, uri, resources.experiment, run_name(setting), resume_id)
    record_start(tracker, setting, loop.model, data, tags, first=saved is None)
    with StopSignals() as stop:
        try:
            tracker.watch_system(resumed=saved is not None)  # until tracker.close, on every path
            return _run_loop(loop, tracker, storage, stop, on_progress, on_eval)
        except KeyboardInterrupt as err:
            stop.disarm()
            signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
            _stop(loop, tracker, storage, signal.Signals(signum).name)
            stop.hand_on(signum)  # in a Ray worker, SIGTERM then ends it: Ray reruns the run
            raise
        except Exception as err:
            tracker.fail(failure_cause(err), traceback.format_exc())
            note_recorded(err, tracker.run_id)
            raise


def _stop(loop: LoopState, tracker: RunTracker, storage: Storage, signal_name: str) -> None:
    """End a run stopped by ``signal_name``: at a step boundary, its metrics flushed and its
    checkpoint written (else its last checkpoint stays), then its MLflow run ``KILLED``."""
    if loop.settled:
        tracker.flush()
        storage.save_checkpoint(loop.setting.run_hash, loop.state(tracker.run_id))
    tracker.interrupt(loop.step, signal_name)


def _run_loop(loop: LoopState, tracker: RunTracker, storage: Storage, stop: StopSignals,
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
        stop.check()  # a step boundary: a stop asked for is taken here
        loop.settled = False
        t0 = time.perf_counter()
        loss, lr, grad_norm, spike = loop.train_step(total)
        loop.timed(r.batch_size * r.seq_len, time.perf_counter() - t0)
        step = loop.step
        tokens_per_s = loop.tokens_seen / max(loop.train_time_s, 1e-9)
        tracker.metrics({Metric.TRAIN_LOSS: loss, Metric.LR: lr, Metric.GRAD_NORM: grad_norm},
                        step)
        if spike:
            tracker.metric(Metric.LOSS_SPIKE, loss, step)
        reached(KillPoint.STEPPED, step)
        assert loop.first_loss is not None
        divergence = diverged(loss, step, r.warmup_steps, loop.first_loss, r.divergence_margin)
        if on_progress is not None:
            on_progress(Progress(step, total, loss, tokens_per_s))
        if divergence is None and step in eval_at:
            val = evaluate(loop.model, val_batches, device, loop.numerics, loop.micro_batch)
            if step < total:  # the final step's are part of the final measurements
                tracker.metrics(val_metrics(val, data.bytes_per_token["val"]), step)
                tracker.metrics(internals_during_training(loop.measure(measure)), step)
                tracker.metrics(loop.throughput(), step)
            if on_eval is not None:
                on_eval(EvalPoint(step, total, loop.train_time_s, val, tuple(loop.since_eval),
                                  loop.model, measure, data.tokenizer.eot_id))
            loop.since_eval = []
            reached(KillPoint.EVALUATED, step)
            tracker.flush()  # live charts follow every evaluation, not only checkpoints
            reached(KillPoint.EVAL_FLUSHED, step)
        if divergence is None and step % r.checkpoint_every == 0 and step < total:
            tracker.flush()  # first: a checkpoint never holds a step whose metrics are lost
            reached(KillPoint.CHECKPOINT_FLUSHED, step)
            storage.save_checkpoint(loop.setting.run_hash, loop.state(tracker.run_id))
            reached(KillPoint.CHECKPOINTED, step)
        loop.settled = True
    stop.check()
    summary, internals = final_evaluation(loop, divergence, measure)
    tracker.metrics(summary.to_metrics(), loop.step)
    if internals is not None:
        tracker.log_arrays(Artifact.INTERNALS, internals.arrays())
    status = RunStatus.DIVERGED if divergence else RunStatus.FINISHED
    if divergence:
        tracker.set_tags({Tag.DIVERGED_STEP: str(loop.step), Tag.DIVERGENCE: divergence})
    elif r.save_weights:  # before the status: a finished run's weights are there to load
        log_weights(tracker, loop.model)
    tracker.log_json(Artifact.SUMMARY, {"status": status.value, **summary.as_dict()})
    tracker.flush()
    reached(KillPoint.FINAL_FLUSHED, loop.step)
    tracker.close(status, "FINISHED")
    reached(KillPoint.CLOSED, loop.step)
    storage.drop_checkpoint(loop.setting.run_hash)
    return RunResult(tracker.run_id, loop.setting.run_hash, status, summary)
