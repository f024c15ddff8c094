"""The device check (not a test): on one GPU, in a few minutes, does every GPU path compute
what the CPU-tested paths compute, and how fast is it?

1. **Kernel parity**: a G1-elementwise model in bf16 autocast; each attention kernel that can
   run here (``sdpa``, ``flash`` where flash-attn is installed, ``explicit``) against the
   explicit path: logits and gradients. Also the MoE's expert paths (``grouped``, ``looped``,
   ``dense``; ``model/ffn.py``) against each other.
2. **Training speed**: the ~20M backbone (the ``gpu-20m`` size preset) as the runner trains it
   (bf16 autocast, fused AdamW, TF32, ``torch.compile``), baseline and G1 elementwise, a few
   hundred steps each on the built-in corpus: tokens/s and MFU over the steps after warm-up,
   peak GPU memory, and the gate's cost as a ratio of the two.
3. **The runner**: one short ``train()`` of G1 elementwise on the GPU (compile on by default,
   measurements, MLflow in a temporary folder), its status, MFU and measurement time.

Writes ``docs/benchmarks/gpu.json`` and ``docs/benchmarks/gpu.md`` (a Markdown table), and
prints the table. Exit code 1 if a parity check fails. Without a CUDA device it says so and
exits 0 at once; ``--cpu-smoke`` runs every part shrunk to seconds on the CPU instead (the
test that keeps this script from rotting), writing to ``--out`` (default: a temporary folder).

    .venv/bin/python benchmarks/gpu_check.py [--steps 300] [--cpu-smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gatelab.metrics import Metric
from gatelab.model.attention_ops import Kernel, flash_available
from gatelab.model.build import build_model
from gatelab.model.ffn import EXPERT_PATHS, MoE
from gatelab.registry.backbone import Backbone, MoEConfig
from gatelab.registry.loader import load_variant
from gatelab.registry.presets import PRESETS
from gatelab.runners.data.batches import sample_batch
from gatelab.runners.data.tokens import DataConfig, prepare_data
from gatelab.runners.run.flops import (
    device_name,
    peak_flops,
    throughput_metrics,
    train_flops_per_token,
)
from gatelab.runners.run.loop_state import make_optimizer
from gatelab.runners.run.loss import accumulate_gradients, lm_loss
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.train import train

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"

GPU_20M = PRESETS.get("gpu-20m") or Backbone(
    n_layers=12, d_model=384, n_heads=8, n_kv_heads=2, head_dim=64, ffn_hidden=1024,
    vocab_size=8192)
"""The ~20M backbone: the ``gpu-20m`` size preset (its shape, should the preset be gone)."""

SMOKE = Backbone(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_hidden=128,
                 vocab_size=512)
"""The ``--cpu-smoke`` backbone: seconds on a CPU."""

BF16_TOLERANCE = 0.05
"""The largest relative error (max |a - b| / max |b|) of bf16 logits and gradients against
the explicit path: a few bf16 ulps of the largest entry."""


@dataclasses.dataclass(frozen=True)
class Config:
    device: torch.device
    backbone: Backbone
    steps: int
    warmup: int
    batch_size: int
    seq_len: int
    compile_backend: str
    runner_steps: int


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def kernel_parity(cfg: Config) -> list[dict[str, Any]]:
    """Each runnable kernel against ``explicit`` on one G1-elementwise model and batch."""
    kernels = [Kernel.SDPA, Kernel.EXPLICIT]
    if flash_available() and cfg.device.type == "cuda":
        kernels.insert(1, Kernel.FLASH)
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(cfg.backbone.vocab_size, (2, min(cfg.seq_len, 256)),
                        generator=generator).to(cfg.device)
    results: dict[Kernel, tuple[torch.Tensor, torch.Tensor]] = {}
    for kernel in kernels:
        torch.manual_seed(0)
        model = build_model(load_variant("g1-elementwise"), cfg.backbone, cfg.device,
                            kernel=kernel)
        with torch.autocast(cfg.device.type, dtype=torch.bfloat16):
            logits = model(idx).logits
        logits.float().square().mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[kernel] = (logits.detach(), grads)
    ref_logits, ref_grads = results[Kernel.EXPLICIT]
    rows = []
    for kernel in kernels[:-1]:
        logits, grads = results[kernel]
        err_l, err_g = relative_error(logits, ref_logits), relative_error(grads, ref_grads)
        rows.append({"check": f"kernel {kernel.value} vs explicit", "logits_rel_err": err_l,
                     "grads_rel_err": err_g,
                     "ok": err_l < BF16_TOLERANCE and err_g < BF16_TOLERANCE})
    return rows


def moe_parity(cfg: Config) -> list[dict[str, Any]]:
    """The MoE's expert paths against ``looped`` in bf16 autocast (``grouped`` on CUDA only)."""
    moe_cfg = MoEConfig(n_experts=8, top_k=2, expert_hidden=cfg.backbone.ffn_hidden // 2)
    torch.manual_seed(0)
    layer = MoE(cfg.backbone.d_model, moe_cfg, out_std=0.02).to(cfg.device)
    x = torch.randn(4, 128, cfg.backbone.d_model, device=cfg.device)
    paths = [p for p in EXPERT_PATHS if p != "grouped" or cfg.device.type == "cuda"]
    results = {}
    for path in paths:
        layer.path = path
        layer.zero_grad()
        xp = x.clone().requires_grad_()
        with torch.autocast(cfg.device.type, dtype=torch.bfloat16):
            y, aux = layer(xp)
        (y.float().square().mean() + aux).backward()
        results[path] = (y.detach(), xp.grad, layer.w_gate_EHD.grad)
    rows = []
    for path in paths:
        if path == "looped":
            continue
        errs = [relative_error(a, b) for a, b in zip(results[path], results["looped"],
                                                     strict=True)]
        rows.append({"check": f"moe {path} vs looped", "logits_rel_err": errs[0],
                     "grads_rel_err": max(errs[1:]),
                     "ok": max(errs) < BF16_TOLERANCE})
    return rows


def train_speed(cfg: Config, variant: str, data: Any) -> dict[str, Any]:
    """The runner's step (bf16 autocast, fused AdamW on CUDA, compiled loss) for ``cfg.steps``
    steps; throughput over the steps after ``cfg.warmup``."""
    numerics = resolve_numerics(cfg.device.type, "bf16" if cfg.device.type == "cuda" else "fp32")
    numerics.apply()
    torch.manual_seed(0)
    model = build_model(load_variant(variant), cfg.backbone, cfg.device,
                        vocab_size=data.vocab_size, kernel=numerics.kernel)
    recipe = load_recipe("tiny", {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len})
    optimizer = make_optimizer(model, recipe, fused=cfg.device.type == "cuda")
    loss_fn = torch.compile(functools.partial(lm_loss, model), backend=cfg.compile_backend)
    generator = torch.Generator().manual_seed(0)
    if cfg.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(cfg.device)
    losses, start, compile_s = [], 0.0, 0.0
    for step in range(cfg.steps):
        if step == cfg.warmup:
            _sync(cfg.device)
            start = time.perf_counter()
        t0 = time.perf_counter()
        x, y = sample_batch(data.train, cfg.batch_size, cfg.seq_len, generator)
        x, y = x.to(cfg.device, non_blocking=True), y.to(cfg.device, non_blocking=True)
        with numerics.autocast():
            ce = accumulate_gradients(loss_fn, x, y, None)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(ce)
        if step == 0:
            _sync(cfg.device)
            compile_s = time.perf_counter() - t0
    _sync(cfg.device)
    elapsed = time.perf_counter() - start
    tokens_per_s = (cfg.steps - cfg.warmup) * cfg.batch_size * cfg.seq_len / elapsed
    flops = train_flops_per_token(model, cfg.seq_len)
    out: dict[str, Any] = {
        "variant": variant, "params": model.num_params(), "steps": cfg.steps,
        "first_step_s": compile_s,
        **throughput_metrics(tokens_per_s, flops, peak_flops(device_name(cfg.device))),
        "loss_first": losses[0].item(), "loss_last": losses[-1].item(),
    }
    if cfg.device.type == "cuda":
        out["peak_device_mem_gb"] = torch.cuda.max_memory_allocated(cfg.device) / 1e9
    return out


def runner_run(cfg: Config, work: Path) -> dict[str, Any]:
    """A short ``train()`` of G1 elementwise with the runner's defaults for this device."""
    overrides = {"steps": cfg.runner_steps, "eval_every": cfg.runner_steps,
                 "checkpoint_every": cfg.runner_steps, "warmup_steps": 2,
                 "eval_batches": 2, "measure_batches": 1, "measure_batch_size": 4,
                 "long_context": [1, 2], "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
                 "micro_batch_size": max(1, cfg.batch_size // 2),
                 "data.vocab_size": cfg.backbone.vocab_size}
    recipe = load_recipe("tiny", overrides)
    resources = Resources(device=cfg.device.type, tracking_uri=f"sqlite:///{work}/mlflow.db",
                          work_dir=work, experiment="gpu-check")
    result = train(load_variant("g1-elementwise"), recipe, resources, size=cfg.backbone)
    keys = (Metric.TOKENS_PER_S, Metric.MFU, Metric.ACHIEVED_FLOPS, Metric.PEAK_DEVICE_MEM_GB,
            Metric.PEAK_RSS_GB, Metric.MEASURE_TIME_S, Metric.TRAIN_TIME_S, Metric.VAL_LOSS,
            Metric.F_ATTN)
    metrics = result.summary.to_metrics() if result.summary else {}
    return {"status": str(result.status), **{k: metrics[k] for k in keys if k in metrics}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['device']} (torch {report['torch']}, flash-attn "
             f"{'installed' if report['flash_attn'] else 'not installed'})", "",
             "| parity check | logits rel. err | grads rel. err | ok |", "|---|---|---|---|"]
    for row in report["parity"]:
        lines.append(f"| {row['check']} | {row['logits_rel_err']:.2e} | "
                     f"{row['grads_rel_err']:.2e} | {'yes' if row['ok'] else 'NO'} |")
    lines += ["", f"Training, {report['backbone_params']} parameters, "
              f"{report['config']['batch_size']} x {report['config']['seq_len']} tokens a step, "
              f"{report['config']['steps']} steps (throughput after "
              f"{report['config']['warmup']} warm-up steps), compile backend "
              f"`{report['config']['compile_backend']}`:", "",
              "| variant | tokens/s | MFU | achieved TFLOP/s | peak memory (GB) | first step (s) "
              "| loss first -> last |", "|---|---|---|---|---|---|---|"]
    for row in report["train"]:
        mfu = f"{row['mfu']:.1%}" if "mfu" in row else "-"
        mem = f"{row['peak_device_mem_gb']:.2f}" if "peak_device_mem_gb" in row else "-"
        lines.append(f"| {row['variant']} | {row['tokens_per_s']:,.0f} | {mfu} | "
                     f"{row['achieved_flops'] / 1e12:.1f} | {mem} | {row['first_step_s']:.1f} | "
                     f"{row['loss_first']:.3f} -> {row['loss_last']:.3f} |")
    lines += ["", f"G1 elementwise / baseline throughput: {report['g1_over_baseline']:.3f}", "",
              f"Runner (`train()`, {report['config']['runner_steps']} steps): "
              + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in report["runner"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per variant")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every part shrunk to seconds on the CPU (for the tests)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where gpu.json and gpu.md go (default: docs/benchmarks, or a "
                             "temporary folder with --cpu-smoke)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(f"no GPU: torch {torch.__version__} sees no CUDA device here; nothing to check "
              "(--cpu-smoke runs the check shrunk on the CPU)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="gatelab-gpu-check-"))
    if args.cpu_smoke:
        cfg = Config(torch.device("cpu"), SMOKE, steps=4, warmup=2, batch_size=2, seq_len=32,
                     compile_backend="eager", runner_steps=3)
        out_dir = args.out or work / "out"
    else:
        cfg = Config(torch.device("cuda"), GPU_20M, steps=args.steps,
                     warmup=min(20, args.steps // 4), batch_size=32, seq_len=1024,
                     compile_backend="inductor", runner_steps=60)
        out_dir = args.out or DOCS
    t0 = time.perf_counter()
    parity = kernel_parity(cfg) + moe_parity(cfg)
    print(f"parity checks done ({time.perf_counter() - t0:.0f} s)", flush=True)
    data = prepare_data(DataConfig(vocab_size=cfg.backbone.vocab_size,
                                   cache_dir=str(work / "cache")))
    trained = [train_speed(cfg, v, data) for v in ("baseline", "g1-elementwise")]
    print(f"training speed done ({time.perf_counter() - t0:.0f} s)", flush=True)
    runner = runner_run(cfg, work / "runner")
    torch.manual_seed(0)
    params = build_model(load_variant("baseline"), cfg.backbone, "meta").num_params()
    report = {
        "device": device_name(cfg.device), "torch": torch.__version__,
        "cuda": torch.version.cuda, "flash_attn": flash_available(),
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "backbone"},
        "backbone": dataclasses.asdict(cfg.backbone), "backbone_params": params,
        "parity": parity, "train": trained,
        "g1_over_baseline": trained[1]["tokens_per_s"] / trained[0]["tokens_per_s"],
        "runner": runner, "wall_s": time.perf_counter() - t0,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (out_dir / "gpu.md").write_text(table)
    print(table)
    print(f"written to {out_dir / 'gpu.json'} and gpu.md ({report['wall_s']:.0f} s)")
    for scratch in ("cache", "runner"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    if not out_dir.is_relative_to(work):
        shutil.rmtree(work, ignore_errors=True)
    ok = all(row["ok"] for row in parity) and runner["status"] == "finished" and all(
        math.isfinite(row["loss_last"]) for row in trained)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
