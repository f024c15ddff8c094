"""Synthetic recorded runs with known numbers: as the raw tables a store reader returns, or
logged into a real MLflow store the way ``runners/run/tracking.py`` logs them (tags, flattened
params as strings, metrics with ``log_batch``); ``fill_store`` makes a store holding the runs
of sweep ``t`` and every kind of run a loader must leave out or keep apart."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from gatelab.contract import Tag, sweep_tag
from gatelab.dashboards.store.frame import to_frame
from gatelab.dashboards.store.raw_runs import KV_SCHEMA, METRIC_SCHEMA, RUNS_SCHEMA, RawRuns

GATES = {"baseline": ("none", "none", "T1-1"), "g1-elementwise": ("G1", "elementwise", "T1-5"),
         "g1-headwise": ("G1", "headwise", "T1-10"), "g2-elementwise": ("G2", "elementwise",
                                                                        "T1-6"),
         "more-q-heads": ("none", "none", "T1-3"), "custom-variant": ("G1", "elementwise",
                                                                      "none"),
         "sdpa-scale": ("none", "none", "none"), "g1-ns-sigmoid": ("G1", "elementwise", "T4-7")}


@dataclass
class FakeRun:
    """One recorded run. ``metrics`` overrides or adds to the defaults of its status."""

    variant: str
    seed: int
    val_loss: float = 5.0
    lr: float = 3e-3
    status: str = "finished"
    steps: int = 40
    sweeps: tuple[str, ...] = ("t",)
    metrics: dict[str, float] = field(default_factory=dict)
    start_ms: int = 0
    corpus: str = "wiki"
    """Stands for everything the setting hash covers that the params do not show."""
    legacy: bool = False
    """Recorded by code older than the setting-hash tags."""

    @property
    def run_hash(self) -> str:
        text = f"{self.variant}|{self.seed}|{self.lr}|{self.steps}|{self.corpus}|{self.legacy}"
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def setting_hash(self) -> str:
        """What the runner tags: the same for every variant and seed of one setting."""
        return hashlib.sha1(f"tiny|{self.corpus}|{self.steps}|{self.lr}".encode()).hexdigest()[:16]

    @property
    def lr_setting_hash(self) -> str:
        return hashlib.sha1(f"tiny|{self.corpus}|{self.steps}".encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        position, granularity, row = GATES[self.variant]
        tags = {Tag.VARIANT: self.variant, Tag.RUN_HASH: self.run_hash,
                Tag.SETTING_HASH: self.setting_hash, Tag.LR_SETTING_HASH: self.lr_setting_hash,
                Tag.STATUS: self.status, Tag.SEED: str(self.seed),
                Tag.LR: str(self.lr), Tag.SIZE: "tiny",
                Tag.POSITION: position, Tag.GRANULARITY: granularity,
                Tag.PAPER_ROW: row, Tag.GIT_COMMIT: "abc123",
                **{k: v for s in self.sweeps for k, v in sweep_tag(s).items()}}
        if self.status == "diverged":
            tags[Tag.DIVERGED_STEP] = "7"
        if self.legacy:
            del tags[Tag.SETTING_HASH], tags[Tag.LR_SETTING_HASH]
        return {str(k): v for k, v in tags.items()}

    def params(self) -> dict[str, str]:
        position, granularity, _ = GATES[self.variant]
        return {"recipe.size": "tiny", "recipe.steps": str(self.steps), "recipe.tokens": "None",
                "recipe.lr": str(self.lr), "recipe.seed": str(self.seed),
                "recipe.batch_size": "8", "recipe.seq_len": "64",
                "recipe.long_context": "[1, 2, 4]", "recipe.compile": "False",
                "spec.gate.position": "None" if position == "none" else position,
                "spec.gate.init.bias": "None", "spec.capacity.q_heads_mult": "1.0",
                "backbone.n_layers": "2", "backbone.qk_norm": "True",
                "backbone.norm_eps": "1e-06"}

    def final_metrics(self) -> dict[str, float]:
        gated = GATES[self.variant][0] != "none"
        common = {"loss_spikes": 0.0, "spike_score": 0.0, "max_grad_norm": 2.0,
                  "params": 1000.0 + (64.0 if gated else 0.0), "steps": float(self.steps)}
        if self.status != "finished":
            return {**common, "diverged_step": 7.0, **self.metrics}
        loss = self.val_loss
        out = {**common, "val_loss": loss, "val_ppl": math.exp(loss), "val_bpb": loss / 2.5,
               "val_loss_ctx1x": loss, "val_loss_ctx2x": loss + 0.1, "val_loss_ctx4x": loss + 0.3,
               "f_attn": 0.4, "m_act": 50.0, "f_attn.layer00": 0.3, "f_attn.layer01": 0.5,
               "m_act.layer00": 40.0, "m_act.layer01": 60.0}
        if gated:
            out.update({"gate_score.mean": 0.3, "gate_score.frac_below_0.1": 0.2,
                        "gate_score.mean.layer00": 0.25, "gate_score.mean.layer01": 0.35,
                        "gate_score.frac_below_0.1.layer00": 0.3,
                        "gate_score.frac_below_0.1.layer01": 0.1})
        out.update(self.metrics)
        return out

    def history(self) -> list[tuple[str, int, float]]:
        """(metric, step, value): a training loss per step and two validations."""
        points = [("train_loss", s, 8.0 - s * 0.05 + 0.01 * self.seed)
                  for s in range(1, self.steps + 1)]
        if self.status == "finished":
            points += [("val_loss", self.steps // 2, self.val_loss + 0.5),
                       ("val_loss", self.steps, self.val_loss)]
        return points


def raw_runs(fakes: list[FakeRun]) -> RawRuns:
    """The tables a store reader would return for ``fakes`` (run ids ``r0``, ``r1``...)."""
    runs, tags, params, metrics = [], [], [], []
    for i, fake in enumerate(fakes):
        rid = f"r{i}"
        runs.append((rid, f"{fake.variant}-{fake.run_hash[:8]}", "gatelab", "FINISHED",
                     fake.start_ms or 1_700_000_000_000 + i, 1_700_000_100_000 + i))
        tags += [(rid, k, v) for k, v in fake.tags().items()]
        params += [(rid, k, v) for k, v in fake.params().items()]
        metrics += [(rid, k, v) for k, v in fake.final_metrics().items()]
    return RawRuns(pl.DataFrame(runs, schema=RUNS_SCHEMA, orient="row"),
                   pl.DataFrame(tags, schema=KV_SCHEMA, orient="row"),
                   pl.DataFrame(params, schema=KV_SCHEMA, orient="row"),
                   pl.DataFrame(metrics, schema=METRIC_SCHEMA, orient="row"))


def frame(fakes: list[FakeRun]) -> pl.DataFrame:
    """The run frame of ``fakes``, typed exactly as a loaded one."""
    return to_frame(raw_runs(fakes))


def log_run(client: Any, experiment_id: str, fake: FakeRun, with_history: bool = True) -> str:
    """Record ``fake`` in a real store; returns its run id."""
    from mlflow.entities import Metric, Param, RunTag

    run_id: str = client.create_run(experiment_id,
                                    run_name=f"{fake.variant}-{fake.run_hash[:8]}").info.run_id
    now = int(time.time() * 1000)
    points = [Metric(k, v, now, step) for k, step, v in fake.history()] if with_history else []
    points += [Metric(k, v, now + 1, fake.steps) for k, v in fake.final_metrics().items()]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i:i + 1000])
    client.log_batch(run_id, params=[Param(k, v) for k, v in fake.params().items()],
                     tags=[RunTag(k, v) for k, v in fake.tags().items()])
    client.set_terminated(run_id, status="FINISHED")
    return run_id


@dataclass
class Store:
    uri: str
    path: Path
    sweep_ids: dict[str, FakeRun]
    """Run id -> run, for the training runs of sweep ``t`` in experiment ``gatelab``."""
    other_sweep_id: str
    other_experiment_id: str
    summary_id: str
    no_hash_id: str
    deleted_id: str
    stale_id: str
    """An older run of a hash recorded again later (only the newer one is loaded)."""


def fill_store(folder: Path) -> Store:
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    path = folder / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gatelab", artifact_location=str(folder / "artifacts"))
    other_exp = client.create_experiment("elsewhere",
                                         artifact_location=str(folder / "artifacts2"))
    fakes = ([FakeRun("baseline", s, 5.0 + 0.1 * s) for s in range(3)]
             + [FakeRun("g1-elementwise", s, 4.9 + 0.1 * s) for s in range(2)]
             + [FakeRun("g1-elementwise", 2, status="diverged")])
    stale = FakeRun("baseline", 0, 9.0, status="failed")  # same hash as baseline seed 0
    stale_id = log_run(client, exp, stale, with_history=False)
    sweep_ids = {log_run(client, exp, f): f for f in fakes}
    other_sweep_id = log_run(client, exp, FakeRun("baseline", 5, sweeps=("other",)))
    other_exp_id = log_run(client, other_exp, FakeRun("baseline", 6))
    summary = client.create_run(exp, run_name="summary-t").info.run_id
    client.log_batch(summary, tags=[RunTag("gatelab.summary", "1"),
                                    RunTag("gatelab.sweep.t", "1")])
    no_hash = client.create_run(exp, run_name="someone-else").info.run_id
    client.log_batch(no_hash, tags=[RunTag("gatelab.sweep.t", "1")])
    deleted = log_run(client, exp, FakeRun("g1-headwise", 0), with_history=False)
    client.delete_run(deleted)
    return Store(uri, path, sweep_ids, other_sweep_id, other_exp_id, summary, no_hash,
                 deleted, stale_id)
