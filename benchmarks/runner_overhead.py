"""Benchmark (not a test): the runner's throughput against a bare training loop over the same
model, and the step time of each G1/G2 variant against the baseline, as ratios measured in one
run. Prints a table and writes ``docs/benchmarks/runner_overhead.json``.

    .venv/bin/python benchmarks/runner_overhead.py [--steps 150] [--threads 1]
        [--pairs 30]
        [--part all|overhead|steps]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gatelab.model.build import build_model
from gatelab.registry.loader import load_all, load_variant
from gatelab.runners.data.batches import sample_batch
from gatelab.runners.data.tokens import DataConfig, prepare_data
from gatelab.runners.run.loop_state import make_optimizer
from gatelab.runners.run.loss import lm_loss
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.train import train

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "runner_overhead.json"


class Stepper:
    """The bare loop: one variant's model, optimizer and pre-sampled batches (the same batches
    for every variant), with nothing else (no logging, no measurements), stepped one optimizer
    step at a time so that it can be interleaved with another loop."""

    def __init__(self, variant: str, recipe, data, steps: int) -> None:
        torch.manual_seed(0)
        self.model = build_model(load_variant(variant), recipe.size, vocab_size=data.vocab_size)
        self.opt = make_optimizer(self.model, recipe)
        self.clip = recipe.grad_clip
        gen = torch.Generator().manual_seed(0)
        self.batches = [sample_batch(data.train, recipe.batch_size, recipe.seq_len, gen)
                        for _ in range(steps)]
        self.i = 0

    def step(self) -> float:
        """One forward/backward/clip/AdamW step on the next batch; its wall time in seconds."""
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        start = time.perf_counter()
        ce, aux = lm_loss(self.model, x, y)
        (ce + aux).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def paired_step_ratio(variant: str, recipe, data, pairs: int, warmup: int) -> dict[str, float]:
    """Median step time of ``variant`` over the baseline's, timed step by step in pairs.

    Both models are built first and warmed up (``warmup`` untimed steps each), then each pair
    times one baseline step and one variant step back to back, the order alternating from pair
    to pair (AB, BA, AB, ...), so that neither side always runs second on warm caches and slow
    drifts of the machine fall on both alike. ``variant="baseline"`` times the baseline against
    a second copy of itself: the method's control, which should come out at 1.0."""
    base = Stepper("baseline", recipe, data, warmup + pairs)
    other = Stepper(variant, recipe, data, warmup + pairs)
    for _ in range(warmup):
        base.step()
        other.step()
    base_s: list[float] = []
    other_s: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            base_s.append(base.step())
            other_s.append(other.step())
        else:
            other_s.append(other.step())
            base_s.append(base.step())
    per_pair = sorted(o / b for o, b in zip(other_s, base_s, strict=True))
    return {"ratio": statistics.median(other_s) / statistics.median(base_s),
            "pair_ratio_q25": per_pair[len(per_pair) // 4],
            "pair_ratio_q75": per_pair[(3 * len(per_pair)) // 4],
            "baseline_step_s": statistics.median(base_s),
            "variant_step_s": statistics.median(other_s)}


def runner_overhead(recipe, data, threads: int, work: Path, warmup: int) -> dict[str, object]:
    """The runner's step time against the bare loop's, interleaved step by step in one process.

    The runner's ``on_progress`` hook (called once per step, after the step's bookkeeping: its
    metric buffering, spike and divergence checks) times one bare step of a second baseline on
    the same batches. The time between the end of one hook call and the start of the next is
    one whole runner step; the sequence runs runner, bare, runner, bare, ..., so both see the
    same machine at the same moments (this machine's speed drifts by 10% or more over
    minutes, and separate timings a minute apart disagree by that much). Evaluations and
    checkpoints are set to the last step only, so no timed step contains one."""
    recipe = dataclasses.replace(recipe, eval_every=recipe.steps, checkpoint_every=recipe.steps)
    bare = Stepper("baseline", recipe, data, recipe.steps)
    runner_s: list[float] = []
    bare_s: list[float] = []
    hook_end: list[float] = []

    def hook(_progress: object) -> None:
        now = time.perf_counter()
        if hook_end:
            runner_s.append(now - hook_end[-1])
        bare_s.append(bare.step())
        hook_end.append(time.perf_counter())

    start = time.perf_counter()
    result = train(load_variant("baseline"), recipe,
                   Resources(threads=threads, tracking_uri=f"sqlite:///{work}/bench.db",
                             work_dir=work, progress=False), on_progress=hook)
    wall_s = time.perf_counter() - start - sum(bare_s)
    runner_med = statistics.median(runner_s[warmup:])
    bare_med = statistics.median(bare_s[warmup:])
    tokens_per_step = recipe.batch_size * recipe.seq_len
    return {
        "steps": recipe.steps, "threads": threads, "warmup_steps_dropped": warmup,
        "bare_step_s": bare_med, "runner_step_s": runner_med,
        "bare_tokens_per_s": tokens_per_step / bare_med,
        "runner_loop_tokens_per_s": tokens_per_step / runner_med,
        "runner_loop_overhead": runner_med / bare_med - 1,
        "runner_wall_s": wall_s,
        "runner_wall_overhead": wall_s / (recipe.steps * bare_med) - 1,
        "runner_reported_tokens_per_s": result.summary.tokens_per_s if result.summary else None,
        "note": "runner and bare steps interleaved in one process (see runner_overhead's "
                "docstring); medians after the first warmup_steps_dropped. runner_wall: the "
                "whole train() call (MLflow set-up, data, one evaluation, final long-context "
                "and internal measurements) less the interleaved bare steps, against "
                "steps x the bare step",
    }


def step_time_ratios(recipe, data, pairs: int, warmup: int) -> dict[str, object]:
    """Each G1/G2 variant's step time over the baseline's (``paired_step_ratio``), and the
    baseline against itself as the control."""
    gates = [(s.id, s.architecture.gate) for s in load_all()]
    variants = ["baseline"] + [i for i, g in gates if g is not None
                               and g.position.value in ("G1", "G2")]
    timings = {v: paired_step_ratio(v, recipe, data, pairs, warmup) for v in variants}
    return {
        "step_time_ratio_vs_baseline": {v: t["ratio"] for v, t in timings.items()},
        "step_time_detail": timings,
        "step_time_method": (
            f"{warmup} untimed warm-up steps per model, then {pairs} pairs of single steps "
            "(baseline, variant), order alternating AB/BA; ratio of median step times; "
            "'baseline' is the baseline against a second copy of itself (the control)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150, help="steps of the overhead run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=30,
                        help="timed step pairs (baseline, variant) per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    parser.add_argument("--part", choices=("all", "overhead", "steps"), default="all",
                        help="measure one part only and update its keys in the JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("tiny", {"steps": args.steps})
    work = Path(tempfile.mkdtemp(prefix="gatelab-bench-"))
    data = prepare_data(DataConfig(cache_dir=str(work / "cache")))
    report: dict[str, Any] = {}
    if args.part != "all" and OUT.exists():
        report = json.loads(OUT.read_text())
    if args.part in ("all", "overhead"):
        report.update(runner_overhead(recipe, data, args.threads, work, args.warmup))
    if args.part in ("all", "steps"):
        report.update(step_time_ratios(recipe, data, args.pairs, args.warmup))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    if "runner_step_s" in report:
        print(f"bare loop      {report['bare_tokens_per_s']:10,.0f} tokens/s  "
              f"({1000 * report['bare_step_s']:.1f} ms/step, median)")
        print(f"runner loop    {report['runner_loop_tokens_per_s']:10,.0f} tokens/s  "
              f"({1000 * report['runner_step_s']:.1f} ms/step)   overhead "
              f"{report['runner_loop_overhead']:+.1%}")
        print(f"whole train() call: {report['runner_wall_s']:.1f} s, "
              f"{report['runner_wall_overhead']:+.1%} over {report['steps']} bare steps "
              "(set-up, evaluation and final measurements included)")
    detail = report.get("step_time_detail")
    if isinstance(detail, dict):
        print("\nstep time against the baseline (bare loop, same batches, paired AB/BA steps)")
        print(f"  {'variant':24s} {'ratio':>6s}  {'pairs q25-q75':>13s}  {'ms/step':>7s}")
        for v, t in detail.items():
            label = "baseline (control)" if v == "baseline" else v
            print(f"  {label:24s} {t['ratio']:6.3f}  {t['pair_ratio_q25']:5.3f}-"
                  f"{t['pair_ratio_q75']:5.3f}  {1000 * t['variant_step_s']:7.1f}")
    print(f"\nwritten to {OUT}")


if __name__ == "__main__":
    main()
