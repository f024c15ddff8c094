"""Benchmark (not a test): loading 10,000 recorded runs, gatelab's dashboards against
``mlflow.search_runs``, as a ratio measured in one run. Writes ``docs/benchmarks/load_runs.json``.

The runs are synthetic but shaped like real ones (the tags, the ~60 flattened params and the
~50 final metrics of a 4-layer gated run), written with one ``log_batch`` per run into a fresh
SQLite store. Timed, after one warm-up call each (MLflow's first call in a process sets up
its SQLAlchemy engine), as the median of interleaved rounds:

- gatelab: ``dashboards.load`` (SQL reader) plus every table and the verdicts;
- gatelab's ``MlflowClient`` reader (the fallback for ``http://`` stores), load only;
- ``mlflow.search_runs`` into pandas (params as strings, no aggregation at all).

    .venv/bin/python benchmarks/load_runs.py [--runs 10000] [--rounds 3] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gatelab.contract import RunStatus, Tag, sweep_tag

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "load_runs.json"
VARIANTS = {"baseline": ("none", "none", "T1-1"), "g1-elementwise": ("G1", "elementwise", "T1-5"),
            "g1-headwise": ("G1", "headwise", "T1-10"), "g2-elementwise": ("G2", "elementwise",
                                                                           "T1-6"),
            "g1-head-shared": ("G1", "elementwise", "T1-12")}
LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LAYERS = 4


def run_content(variant: str, lr: float, seed: int, rng: np.random.Generator
                ) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """(tags, params, final metrics) of one synthetic run."""
    position, granularity, row = VARIANTS[variant]
    diverged = lr >= 1e-1 and (variant == "baseline" or rng.random() < 0.3)
    status = RunStatus.DIVERGED if diverged else RunStatus.FINISHED
    tags = {Tag.VARIANT: variant, Tag.RUN_HASH: f"{variant}-{lr}-{seed}",
            Tag.SETTING_HASH: f"tiny-{lr}", Tag.LR_SETTING_HASH: "tiny",
            Tag.STATUS: status.value, Tag.SEED: str(seed),
            Tag.LR: str(lr), Tag.SIZE: "tiny", Tag.POSITION: position,
            Tag.GRANULARITY: granularity, Tag.PAPER_ROW: row,
            Tag.GIT_COMMIT: "0" * 40, Tag.GIT_DIRTY: "false",
            Tag.DATA: "wiki", **sweep_tag("bench")}
    tags = {str(k): v for k, v in tags.items()}
    params = {f"recipe.{k}": v for k, v in {
        "size": "tiny", "steps": "300", "tokens": "None", "batch_size": "16", "seq_len": "128",
        "lr": str(lr), "min_lr_ratio": "0.1", "warmup_steps": "30", "weight_decay": "0.1",
        "beta1": "0.9", "beta2": "0.95", "grad_clip": "1.0", "seed": str(seed),
        "eval_every": "100", "eval_batches": "8", "measure_batches": "2",
        "long_context": "[1, 2, 4]", "checkpoint_every": "100", "compile": "False",
        "divergence_margin": "1.0", "spike_window": "50", "spike_sigma": "4.0",
        "spike_min_nats": "0.1", "data.source": "wiki", "data.text_column": "text",
        "data.tokenizer": "bpe", "data.vocab_size": "4096"}.items()}
    params.update({f"spec.gate.{k}": v for k, v in {
        "position": position, "granularity": granularity, "sharing": "head-specific",
        "combine": "multiplicative", "activation": "sigmoid", "input": "dependent",
        "init.weight": "None", "init.std": "0.02", "init.bias": "None"}.items()})
    params.update({"spec.sdpa_control": "None", "spec.norm": "pre",
                   "spec.capacity.q_heads_mult": "1.0", "spec.capacity.kv_heads_mult": "1.0",
                   "spec.capacity.extra_experts": "0", "spec.param_match": "False"})
    params.update({f"backbone.{k}": v for k, v in {
        "n_layers": str(LAYERS), "d_model": "128", "n_heads": "4", "n_kv_heads": "2",
        "head_dim": "32", "ffn_hidden": "384", "vocab_size": "4096", "rope_base": "10000.0",
        "qk_norm": "True", "tie_embeddings": "True", "norm_eps": "1e-06", "moe": "None"}.items()})
    metrics = {"loss_spikes": float(rng.integers(0, 3)), "spike_score": float(rng.random()),
               "max_grad_norm": float(1 + 5 * rng.random()), "params": 1.3e6,
               "tokens_per_s": 6000.0, "train_time_s": 90.0, "tokens": 614400.0,
               "steps": 300.0, "train_loss": float(5 + rng.random()), "lr": lr * 0.1,
               "grad_norm": 1.0}
    if not diverged:
        loss = 5.2 - (0.03 if position == "G1" else 0.0) + 0.02 * rng.standard_normal()
        metrics.update({"val_loss": loss, "val_ppl": math.exp(loss), "val_bpb": loss / 2.5,
                        "val_loss_ctx1x": loss, "val_loss_ctx2x": loss + 0.1,
                        "val_loss_ctx4x": loss + 0.3, "f_attn": float(rng.random() * 0.4),
                        "m_act": float(20 + 50 * rng.random())})
        for i in range(LAYERS):
            metrics[f"f_attn.layer{i:02d}"] = float(rng.random() * 0.5)
            metrics[f"m_act.layer{i:02d}"] = float(10 + 80 * rng.random())
            if position != "none":
                for key in ("mean", "frac_below_0.01", "frac_below_0.1"):
                    metrics[f"gate_score.{key}.layer{i:02d}"] = float(rng.random())
        if position != "none":
            metrics.update({"gate_score.mean": 0.3, "gate_score.frac_below_0.01": 0.05,
                            "gate_score.frac_below_0.1": 0.2})
    return tags, params, metrics


def fill(uri: str, n_runs: int) -> float:
    """Write ``n_runs`` runs into experiment ``gatelab``; seconds taken."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gatelab")
    rng = np.random.default_rng(0)
    cells = [(v, lr) for v in VARIANTS for lr in LRS]
    start = time.perf_counter()
    for i in range(n_runs):
        variant, lr = cells[i % len(cells)]
        tags, params, metrics = run_content(variant, lr, i // len(cells), rng)
        run_id = client.create_run(exp, run_name=f"{variant}-{i:04d}").info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 300) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run_id, "FINISHED")
    return time.perf_counter() - start


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None,
                        help="the SQLite file to fill, or to reuse where it already holds "
                             "--runs runs (filling 10,000 runs takes ~10 minutes)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON written (default {OUT})")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    from gatelab.dashboards.runs import load

    db = args.store or Path(tempfile.mkdtemp(prefix="gatelab-loadbench-")) / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    fill_s = None
    if db.exists() and len(load(None, tracking_uri=uri, backend="sql")) == args.runs:
        print(f"reusing {db}: it holds {args.runs} runs")
    else:
        if db.exists():
            raise SystemExit(f"{db} exists but does not hold {args.runs} runs: remove it")
        fill_s = fill(uri, args.runs)
        print(f"wrote {args.runs} runs in {fill_s:.1f} s ({fill_s / args.runs * 1000:.0f} "
              "ms/run)")

    def gatelab_sql() -> tuple[float, float]:
        load_s, runs = timed(lambda: load(None, tracking_uri=uri, backend="sql"))
        assert len(runs) == args.runs
        agg_s, _ = timed(lambda: (runs.table1(), runs.table4(), runs.lr_tolerance(),
                                  runs.stability(), runs.long_context(), runs.verdicts()))
        return load_s, agg_s

    def gatelab_client() -> float:
        seconds, runs = timed(lambda: load(None, tracking_uri=uri, backend="client"))
        assert len(runs) == args.runs
        return seconds

    def mlflow_search() -> tuple[float, Any]:
        mlflow.set_tracking_uri(uri)
        seconds, df = timed(lambda: mlflow.search_runs(experiment_names=["gatelab"],
                                                       max_results=100_000))
        assert len(df) == args.runs
        return seconds, df

    gatelab_sql(), gatelab_client(), mlflow_search()  # warm-up: engines, imports, caches
    sql_load, sql_agg, client_load, search = [], [], [], []
    for _ in range(args.rounds):
        load_s, agg_s = gatelab_sql()
        sql_load.append(load_s)
        sql_agg.append(agg_s)
        client_load.append(gatelab_client())
        search_s, df = mlflow_search()
        search.append(search_s)
    med = statistics.median
    total = [a + b for a, b in zip(sql_load, sql_agg, strict=True)]
    from pandas.api.types import is_numeric_dtype

    string_params = sum(1 for c in df.columns if c.startswith("params.")
                        and not is_numeric_dtype(df[c]))
    report = {
        "runs": args.runs, "rounds": args.rounds, "fill_s": fill_s,
        "gatelab_sql_load_s": med(sql_load), "gatelab_aggregate_s": med(sql_agg),
        "gatelab_load_and_aggregate_s": med(total),
        "gatelab_client_load_s": med(client_load),
        "mlflow_search_runs_pandas_s": med(search),
        "ratio_search_runs_over_gatelab_total": med(search) / med(total),
        "ratio_search_runs_over_gatelab_sql_load": med(search) / med(sql_load),
        "ratio_client_load_over_sql_load": med(client_load) / med(sql_load),
        "search_runs_columns": len(df.columns), "search_runs_param_columns_as_strings":
            string_params,
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "python": platform.python_version(), "mlflow": mlflow.__version__},
        "note": "medians of interleaved rounds after one warm-up of each path; gatelab total "
                "= SQL load + table1, table4, lr_tolerance, stability, long_context, verdicts",
    }
    print(f"gatelab SQL load           {med(sql_load):7.2f} s")
    print(f"gatelab tables + verdicts  {med(sql_agg):7.2f} s")
    print(f"gatelab load + aggregate   {med(total):7.2f} s")
    print(f"gatelab MlflowClient load  {med(client_load):7.2f} s")
    print(f"mlflow.search_runs pandas  {med(search):7.2f} s  ({string_params} param columns "
          "as strings)")
    print(f"ratio: search_runs / gatelab load+aggregate = "
          f"{report['ratio_search_runs_over_gatelab_total']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
