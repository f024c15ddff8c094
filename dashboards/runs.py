"""The query API: ``runs = load("smoke")``, then ``runs.table1()``, ``runs.history("val_loss")``...

``Runs`` holds the frame of one load (``runs.frame``: a row per run, typed columns) and the
store it came from (for metric histories, read on demand). Every method returns a Polars
DataFrame and is a pure function of the frame (and, for ``history``, of the store).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from gatelab.contract import design_tag
from gatelab.dashboards.stats.sequential import Design
from gatelab.dashboards.store.artifacts import RunArrays, read_arrays
from gatelab.dashboards.store.columns import FINISHED, layer_columns
from gatelab.dashboards.store.frame import to_frame
from gatelab.dashboards.store.open_store import Backend, open_store
from gatelab.dashboards.store.raw_runs import RunStore
from gatelab.dashboards.tables import lr_tolerance as lr_tables
from gatelab.dashboards.tables import paper_tables
from gatelab.dashboards.tables.families import family_table
from gatelab.dashboards.tables.long_context import loss_by_length, loss_by_position
from gatelab.dashboards.tables.sink_onset import sink_onset
from gatelab.dashboards.verdicts.claims import Claim
from gatelab.dashboards.verdicts.procedure import untested, verdicts
from gatelab.metrics import Metric
from gatelab.registry.schema import Family


@dataclass(frozen=True)
class Runs:
    """Training runs loaded from a tracking store."""

    frame: pl.DataFrame
    """One row per run (see ``dashboards/store/columns.py`` for the columns)."""
    store: RunStore
    sweep: str | None
    """The sweep these runs were selected by; ``None``: every run."""
    experiment: str | None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return self.frame.height

    def where(self, *predicates: pl.Expr) -> Runs:
        """The runs matching ``predicates`` (Polars expressions on ``frame``'s columns)."""
        return Runs(self.frame.filter(*predicates), self.store, self.sweep, self.experiment)

    def history(self, metric: str | Sequence[str]) -> pl.DataFrame:
        """Every logged point of ``metric`` (one name or several) for these runs: ``run_id``,
        ``variant``, ``seed``, ``lr``, ``setting``, ``setting_id``, ``status``, ``metric``,
        ``step``, ``value``; when a step was logged twice, the later value."""
        names = [metric] if isinstance(metric, str) else list(metric)
        points = self.store.read_history(self.frame["run_id"].to_list(), names)
        points = (points.sort("timestamp")
                  .unique(["run_id", "metric", "step"], keep="last", maintain_order=True)
                  .drop("timestamp"))
        info = self.frame.select("run_id", "variant", "seed", "lr", "setting", "setting_id",
                                 "status")
        return (info.join(points, on="run_id", how="inner")
                .sort("variant", "setting", "seed", "metric", "step"))

    def arrays(self, run_ids: Sequence[str] | None = None) -> dict[str, RunArrays]:
        """Per finished run (by ``run_id``; ``run_ids`` narrows them): its gate-score histograms
        and attention maps (``dashboards/store/artifacts.py``), downloaded once per ``Runs``."""
        fin = self.frame.filter(pl.col("status") == FINISHED)["run_id"].to_list()
        wanted = fin if run_ids is None else [r for r in fin if r in set(run_ids)]
        cache: dict[str, RunArrays | None] = self._cache.setdefault("arrays", {})
        missing = [r for r in wanted if r not in cache]
        if missing:
            got = read_arrays(self.store.uri, missing)
            cache.update({r: got.get(r) for r in missing})
        return {r: a for r in wanted if (a := cache[r]) is not None}

    def table1(self) -> pl.DataFrame:
        """Table 1's shape (``paper_tables.table1``)."""
        return paper_tables.table1(self.frame)

    def rank_agreement(self) -> pl.DataFrame:
        """Spearman's rank correlation of our PPL order with the paper's, per setting."""
        return paper_tables.rank_agreement(self.frame)

    def table4(self) -> pl.DataFrame:
        """Table 4's shape: gate scores, ``m_act``, ``f_attn``, PPL (``paper_tables.table4``)."""
        return paper_tables.table4(self.frame)

    def families(self, families: Sequence[Family | str] | None = None) -> pl.DataFrame:
        """The gate and its alternatives side by side, a row per setting and variant with its
        family (``tables/families.py``: ``families`` narrows them, the baseline always kept)."""
        return family_table(self.frame, families)

    def lr_tolerance(self) -> pl.DataFrame:
        """Variant x LR: final loss or ``diverged k/n``; best and largest stable LR."""
        return lr_tables.lr_tolerance(self.frame)

    def lr_grid(self) -> pl.DataFrame:
        """The LR grid in long, typed form: one row per (variant, LR)."""
        return lr_tables.lr_grid(self.frame)

    def stability(self) -> pl.DataFrame:
        """Divergences, loss spikes, spike score, largest gradient norm."""
        return paper_tables.stability(self.frame)

    def long_context(self) -> pl.DataFrame:
        """Validation loss at 1x, 2x and 4x the training length."""
        return paper_tables.long_context(self.frame)

    def loss_by_position(self) -> pl.DataFrame:
        """Per stage, variant, evaluated length and position bucket: the mean loss
        (``dashboards/tables/long_context.py``; runs recorded with ``position_buckets``)."""
        return loss_by_position(self.frame)

    def loss_by_length(self) -> pl.DataFrame:
        """``loss_by_position`` with a row per stage, variant and length, a column per bucket."""
        return loss_by_length(self.frame)

    def design(self) -> Design | None:
        """The sequential design recorded by ``gatelab sweep NAME --until-decided`` for this
        sweep (an experiment tag), or ``None``."""
        if self.sweep is None or self.experiment is None:
            return None
        if "design" not in self._cache:
            raw = self.store.read_experiment_tags(self.experiment).get(design_tag(self.sweep))
            self._cache["design"] = None if raw is None else Design.from_dict(json.loads(raw))
        design: Design | None = self._cache["design"]
        return design

    def verdicts(self, claims: Sequence[Claim] | None = None, sequential: bool = True
                 ) -> pl.DataFrame:
        """A verdict per claim (``claims``: ``load_claims()``) and setting, with its
        statistic (``dashboards/verdicts/``); decided by the sweep's recorded sequential
        design where it has one and ``sequential``, else with Holm over the claims."""
        return verdicts(self.frame, claims, self.design() if sequential else None)

    def untested(self, claims: Sequence[Claim] | None = None) -> list[str]:
        """Claims these runs cannot test (their variants or an LR grid were not run)."""
        return untested(self.frame, claims)

    def sink_onset(self) -> pl.DataFrame:
        """Per run: the first evaluation step at which some head reached the sink threshold
        (``dashboards/tables/sink_onset.py``), from the logged per-layer sink metrics."""
        names = layer_columns(self.frame.columns, Metric.SINK_HEAD_MAX)
        if not names:
            return sink_onset(pl.DataFrame())
        return sink_onset(self.history(names))

    def massive_activations_per_lr(self) -> pl.DataFrame:
        """Variant x LR: mean ``m_act`` at each LR and its growth over the grid."""
        return lr_tables.massive_activations_per_lr(self.frame)


def load(sweep: str | None = None, tracking_uri: str | None = None,
         experiment: str | None = "gatelab", backend: Backend = "auto") -> Runs:
    """The training runs tagged ``gatelab.sweep.<sweep>`` (``None``: every training run) in
    ``experiment`` (``None``: every experiment) of the store at ``tracking_uri`` (``None``:
    ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``). ``backend``: ``sql`` reads a SQLite
    store's tables directly, ``client`` goes through ``MlflowClient``, ``auto`` picks SQL for
    SQLite files. Summary runs written by ``gatelab report`` are never loaded."""
    store = open_store(tracking_uri, backend)
    return Runs(to_frame(store.read_runs(experiment, sweep)), store, sweep, experiment)
