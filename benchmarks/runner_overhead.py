"""Benchmark (not a test): the runner's throughput against a bare training loop over the same
model, and the step time of each G1/G2 variant against the baseline, as ratios measured in one
run. Prints a table and writes ``docs/benchmarks/runner_overhead.json``.

    .venv/bin/python benchmarks/runner_overhead.py [--steps 150] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from registry.loader import load_all, load_variant
from runners.data import DataConfig, prepare_data, sample_batch
from runners.recipe import load_recipe
from runners.run_config import Resources
from runners.train import build_for_data, lm_loss, make_optimizer, train

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "runner_overhead.json"


def bare_loop(variant: str, recipe, data, steps: int) -> float:
    """Seconds for ``steps`` optimizer steps with nothing else: no logging, no measurements."""
    torch.manual_seed(0)
    model = build_for_data(load_variant(variant), recipe, data.vocab_size, "auto")
    opt = make_optimizer(model, recipe)
    gen = torch.Generator().manual_seed(0)
    batches = [sample_batch(data.train, recipe.batch_size, recipe.seq_len, gen)
               for _ in range(steps)]
    start = time.perf_counter()
    for x, y in batches:
        ce, aux = lm_loss(model, x, y)
        (ce + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("tiny", {"steps": args.steps, "eval_every": 50,
                                  "checkpoint_every": 50})
    work = Path(tempfile.mkdtemp(prefix="gatelab-bench-"))
    data = prepare_data(DataConfig(cache_dir=str(work / "cache")))
    tokens = args.steps * recipe.batch_size * recipe.seq_len

    bare_s = bare_loop("baseline", recipe, data, args.steps)
    start = time.perf_counter()
    result = train(load_variant("baseline"), recipe,
                   Resources(threads=args.threads, tracking_uri=f"sqlite:///{work}/bench.db",
                             work_dir=work, progress=False))
    total_s = time.perf_counter() - start
    runner_tps = result.summary["tokens_per_s"]
    bare_tps = tokens / bare_s
    report: dict[str, object] = {
        "steps": args.steps, "threads": args.threads, "tokens": tokens,
        "bare_tokens_per_s": bare_tps, "runner_loop_tokens_per_s": runner_tps,
        "runner_loop_overhead": bare_tps / runner_tps - 1,
        "runner_wall_s": total_s,
        "runner_wall_overhead": total_s / bare_s - 1,
        "note": "runner_loop: training steps with per-step metric buffering, spike detection and "
                "progress; runner_wall: the whole train() call, including MLflow set-up, "
                "evaluations every 50 steps, checkpoints, long-context and internal measurements",
    }
    variants = ["baseline"] + [s.id for s in load_all() if s.gate is not None
                               and s.gate.position.value in ("G1", "G2")]
    # Interleaved rounds, medians: a busy machine slows whatever runs at that moment, so each
    # variant is timed once per round, next to the baseline, and the median ratio is kept.
    steps = max(10, args.steps // 6)
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            base = bare_loop("baseline", recipe, data, steps)
            ratios[v].append(bare_loop(v, recipe, data, steps) / base)
    report["step_time_ratio_vs_baseline"] = {v: statistics.median(r) for v, r in ratios.items()}
    report["step_time_rounds"] = args.rounds
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"bare loop      {bare_tps:10,.0f} tokens/s")
    print(f"runner loop    {runner_tps:10,.0f} tokens/s   overhead "
          f"{report['runner_loop_overhead']:+.1%}")
    print(f"runner, whole train() call: {total_s:.1f} s vs bare {bare_s:.1f} s "
          f"({report['runner_wall_overhead']:+.1%}, evals and measurements included)")
    print("\nstep time against the baseline (bare loop, same batches)")
    for v, ratio in report["step_time_ratio_vs_baseline"].items():  # type: ignore[union-attr]
        print(f"  {v:24s} {ratio:6.3f}")
    print(f"\nwritten to {OUT}")


if __name__ == "__main__":
    main()
