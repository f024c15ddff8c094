"""Sink probe (an experiment script, not a test): train one backbone shape with the runner
(``gatelab.runners.run.train``, through its per-evaluation hook) and record, at every
evaluation, how much attention goes to the first token, per layer and for the most sink-like
head of each layer, and how much goes to any end-of-text token. It is the tool behind the
search in ``docs/sink-preset.md``, with a per-head view the runner does not log.

``f_attn`` is the runner's definition (``measurements.first_token_attention``: the probability
on key 0, mean over heads and queries 1..T-1; per head with
``first_token_attention_per_head``), on the run's 2 fixed measurement batches.

    .venv/bin/python experiments/sink_probe.py --out /tmp/x2.jsonl --tokenizer bytes \\
        --seq-len 512 --batch 8 --steps 3000

Writes JSON lines: a header (arguments, parameter count), then one record per evaluation:
``step``, ``t`` (seconds of training so far), ``train`` (mean training loss since the last
record), ``val``, ``f`` (f_attn per layer), ``fmaxhead`` (largest per-head first-token share per
layer), ``eot`` (share on end-of-text keys, including key 0 when it is one), per layer. The run
itself is recorded in MLflow like any other (``--tracking-uri``). Uses the GPU when there is
one (``--device``), in fp32, so CPU and GPU runs compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import IO

import numpy as np
import torch

from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.runners.run.measurements import first_token_attention_per_head
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.train import EvalPoint, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON-lines file to write")
    p.add_argument("--variant", default="baseline")
    p.add_argument("--tokenizer", choices=("bpe", "bytes"), default="bpe")
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--ffn", type=int, default=384)
    p.add_argument("--qk-norm", action="store_true", help="QK-norm on (the tiny preset's)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="after warmup: constant lr, or cosine to 0.1 x lr over --steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--windows", choices=("document", "random"), default="document")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=150, help="steps between measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work-dir", default=".gatelab", help="token cache and checkpoints")
    p.add_argument("--tracking-uri", help="MLflow store of the run (default: the usual)")
    return p.parse_args(argv)


@torch.no_grad()
def probe(model: GatedLM, batches: list[torch.Tensor], eot: int
          ) -> dict[str, list[float]]:
    """The attention shares described in the module docstring."""
    was_training = model.training
    model.eval()
    f_per_batch: list[torch.Tensor] = []  # each (layers, heads)
    eot_per_batch: list[torch.Tensor] = []  # each (layers,)
    for x in batches:
        out = model(x, return_probs=True)
        assert out.attn_probs is not None
        is_eot_BS = (x == eot).double()
        f_per_batch.append(torch.stack([first_token_attention_per_head(p)
                                        for p in out.attn_probs]))
        eot_per_batch.append(torch.stack([
            (p[:, :, 1:, :].double() * is_eot_BS[:, None, None, :]).sum(-1).mean()
            for p in out.attn_probs]))
    model.train(was_training)
    f_lh = torch.stack(f_per_batch).mean(0)
    return {"f": [round(v, 3) for v in f_lh.mean(1).tolist()],
            "fmaxhead": [round(v, 3) for v in f_lh.max(1).values.tolist()],
            "eot": [round(v, 3) for v in torch.stack(eot_per_batch).mean(0).tolist()]}


def run(args: argparse.Namespace) -> None:
    backbone = Backbone(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads,
                        n_kv_heads=args.kv_heads, head_dim=args.head_dim, ffn_hidden=args.ffn,
                        vocab_size=args.vocab, qk_norm=args.qk_norm)
    recipe = load_recipe("tiny", {
        "steps": args.steps, "lr": args.lr, "warmup_steps": args.warmup,
        "min_lr_ratio": 0.1 if args.schedule == "cosine" else 1.0,
        "weight_decay": args.weight_decay, "seed": args.seed, "batch_size": args.batch,
        "seq_len": args.seq_len, "eval_every": args.every, "checkpoint_every": args.every,
        "eval_batches": 2, "measure_batches": 2, "long_context": [1],
        "data.tokenizer": args.tokenizer, "data.vocab_size": args.vocab,
        "data.window_start": args.windows})
    resources = Resources(device=args.device, precision="fp32",  # type: ignore[arg-type]
                          threads=args.threads, tracking_uri=args.tracking_uri,
                          experiment="sink-probe", work_dir=Path(args.work_dir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        header_written = False

        def record(point: EvalPoint) -> None:
            nonlocal header_written
            if not header_written:
                _write(out, {"args": {k: str(v) for k, v in vars(args).items()},
                             "params": point.model.num_params(), "eot": point.eot_id,
                             "vocab": point.model.backbone.vocab_size})
                header_written = True
            _write(out, {"step": point.step, "t": round(point.train_time_s, 1),
                         "train": round(float(np.mean(point.train_losses)), 4),
                         "val": round(point.val_loss, 4),
                         **probe(point.model, point.measure_batches, point.eot_id)})

        result = train(load_variant(args.variant), recipe, resources, size=backbone,
                       on_eval=record)
        if result.skipped:
            print(f"this setting is already recorded (run {result.run_id}, hash "
                  f"{result.run_hash}); nothing trained: use another --tracking-uri")


def _write(out: IO[str], record: dict[str, object]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


if __name__ == "__main__":
    run(parse_args())
