"""Benchmark (not a test): the tiny run's training step in this working tree against the same
step at an earlier commit, on one CPU thread, as a ratio measured in one run; and whether the
two compute the same losses.

Two worker processes, one importing this tree's ``gatelab`` and one a copy of ``--ref``'s files
(``git archive``, mapped onto the ``gatelab`` namespace the way that commit's pyproject maps
them), each build the runner's own training loop (``loop_state.LoopState``: the model, AdamW, batch
sampling, the step as ``train()`` runs it) for the same variant, recipe and seed. The driver
then asks them for single steps in pairs, the order alternating (AB, BA, ...), so the
machine's drift falls on both alike. Both loops see the same batches, so their losses must
agree step for step: the largest difference is reported beside the ratio.

    .venv/bin/python benchmarks/throughput_vs_commit.py [--ref HEAD] [--variant baseline]
        [--pairs 40] [--warmup 5]

Prints the ratio and writes ``docs/benchmarks/throughput_vs_commit.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks" / "throughput_vs_commit.json"

WORKER = r"""
import sys, time
pkg = sys.argv[1]
if pkg != "-":  # import the old tree: drop the editable install's finder, put the copy first
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, pkg)
import torch
torch.set_num_threads(1)
import gatelab
from gatelab.registry.loader import load_variant
from gatelab.runners.data.tokens import prepare_data
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.setting import resolve_setting
try:
    from gatelab.runners.run.loop_state import LoopState
except ImportError:  # a tree from before the loop's state had a module of its own
    from gatelab.runners.run.train import _Loop as LoopState
variant, steps, cache = sys.argv[2], int(sys.argv[3]), sys.argv[4]
recipe = load_recipe("tiny", {"steps": steps})
setting = resolve_setting(load_variant(variant), recipe, resolve_numerics("cpu"))
data = prepare_data(setting.data_config(__import__("pathlib").Path(cache)))
loop = LoopState(setting, recipe.size, Resources(device="cpu", threads=1), data)
print("ready", gatelab.__file__, flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    loss = loop.train_step(steps)[0]
    print(time.perf_counter() - start, repr(loss), flush=True)
"""


def tree_at(ref: str, where: Path) -> Path:
    """``ref``'s files under ``where/src``, and a folder ``where/pkg`` holding ``gatelab`` laid
    out as that commit's pyproject maps its folders onto the namespace; returns ``pkg``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    src = where / "src"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    mapping = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    pkg = where / "pkg"
    shutil.copytree(src / mapping.get("gatelab", "gatelab"), pkg / "gatelab")
    for name, folder in mapping.items():
        if name != "gatelab":
            target = pkg / name.replace(".", "/")
            shutil.rmtree(target, ignore_errors=True)
            target.symlink_to(src / folder, target_is_directory=True)
    return pkg


class Worker:
    def __init__(self, pkg: str, variant: str, steps: int, cache: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, pkg, variant, str(steps),
                                      str(cache)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=tempfile.gettempdir())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"worker for {pkg} failed to start: {line!r}")
        self.source = line.split(maxsplit=1)[1].strip()

    def step(self) -> tuple[float, float]:
        """One training step: (seconds, loss)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        seconds, loss = self.proc.stdout.readline().split()
        return float(seconds), float(loss)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="HEAD", help="the commit to compare against")
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gatelab-vs-commit-"))
    steps = args.warmup + args.pairs
    try:
        old = Worker(str(tree_at(args.ref, work)), args.variant, steps, work / "cache-old")
        new = Worker("-", args.variant, steps, work / "cache-new")
        old_s, new_s, old_loss, new_loss = [], [], [], []
        for i in range(steps):
            pair = (old, new) if i % 2 == 0 else (new, old)
            results = {id(w): w.step() for w in pair}
            (o_t, o_l), (n_t, n_l) = results[id(old)], results[id(new)]
            old_loss.append(o_l)
            new_loss.append(n_l)
            if i >= args.warmup:
                old_s.append(o_t)
                new_s.append(n_t)
        sources = (old.source, new.source)
        old.close()
        new.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tokens = 16 * 128  # the tiny recipe's batch x sequence length
    per_pair = sorted(o / n for o, n in zip(old_s, new_s, strict=True))
    report = {
        "ref": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.ref],
                              check=True, capture_output=True, text=True).stdout.strip(),
        "variant": args.variant, "threads": 1, "pairs": args.pairs, "warmup": args.warmup,
        "old_step_s": statistics.median(old_s), "new_step_s": statistics.median(new_s),
        "old_tokens_per_s": tokens / statistics.median(old_s),
        "new_tokens_per_s": tokens / statistics.median(new_s),
        "throughput_ratio_new_over_old": statistics.median(old_s) / statistics.median(new_s),
        "pair_ratio_q25": per_pair[len(per_pair) // 4],
        "pair_ratio_q75": per_pair[(3 * len(per_pair)) // 4],
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(old_loss, new_loss,
                                                                    strict=True)),
        "final_loss_old": old_loss[-1], "final_loss_new": new_loss[-1], "steps": steps,
        "sources": sources,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.variant}, 1 thread, {args.pairs} paired steps against {report['ref']}:")
    print(f"  {report['ref']:>8s} {report['old_tokens_per_s']:8,.0f} tokens/s "
          f"({1000 * report['old_step_s']:.0f} ms/step, median)")
    print(f"  {'this':>8s} {report['new_tokens_per_s']:8,.0f} tokens/s "
          f"({1000 * report['new_step_s']:.0f} ms/step)")
    print(f"  throughput ratio (this / {report['ref']}): "
          f"{report['throughput_ratio_new_over_old']:.3f} (per-pair q25-q75 "
          f"{report['pair_ratio_q25']:.3f}-{report['pair_ratio_q75']:.3f})")
    print(f"  losses over {steps} steps: largest difference "
          f"{report['max_abs_loss_difference']:.3g}, final {report['final_loss_old']:.6f} / "
          f"{report['final_loss_new']:.6f}")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
