"""Sink probe (an experiment script, not a test): train one backbone shape in a lean loop and
record, every ``--every`` steps, how much attention goes to the first token, per layer and for
the most sink-like head of each layer, and how much goes to any end-of-text token. It is the
tool behind the search in ``docs/sink-preset.md``: cheaper per measurement than ``gatelab
train`` (no MLflow, no long-context evaluation), with a per-head view the runner does not log.

``f_attn`` is the runner's definition (``gatelab.runners.run.measurements.first_token_attention``: the
probability on key 0, mean over heads and queries 1..T-1; per head with
``first_token_attention_per_head``), on 2 fixed validation batches of 8.

    .venv/bin/python experiments/sink_probe.py --out /tmp/x2.jsonl --tokenizer bytes \\
        --seq-len 512 --batch 8 --limit-s 1200

Writes JSON lines: a header (arguments, parameter count), then one record per measurement:
``step``, ``t`` (seconds of training so far), ``train`` (mean training loss since the last
record), ``val``, ``f`` (f_attn per layer), ``fmaxhead`` (largest per-head first-token share per
layer), ``eot`` (share on end-of-text keys, including key 0 when it is one), per layer.
Uses the GPU when there is one (``--device``); bf16 is not used, so CPU and GPU runs compare.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F

from gatelab.model.transformer import GatedLM
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.runners.data.tokens import (
    DataConfig,
    eval_batches,
    prepare_data,
    sample_batch,
    window_starts,
)
from gatelab.runners.run.measurements import first_token_attention_per_head
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.schedule import lr_at
from gatelab.runners.run.train import lm_loss, make_optimizer


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
    p.add_argument("--steps", type=int, default=1_000_000, help="step limit")
    p.add_argument("--limit-s", type=float, default=900.0, help="training-time limit")
    p.add_argument("--every", type=int, default=150, help="steps between measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=".gatelab/cache")
    return p.parse_args(argv)


@torch.no_grad()
def probe(model: GatedLM, batches: list[tuple[torch.Tensor, torch.Tensor]], eot: int
          ) -> dict[str, list[float] | float]:
    """Validation loss and the attention shares described in the module docstring."""
    was_training = model.training
    model.eval()
    losses: list[float] = []
    f_per_batch: list[torch.Tensor] = []  # each (layers, heads)
    eot_per_batch: list[torch.Tensor] = []  # each (layers,)
    for x, y in batches:
        out = model(x, return_probs=True)
        assert out.attn_probs is not None
        losses.append(F.cross_entropy(out.logits.flatten(0, 1).float(), y.flatten()).item())
        is_eot_BS = (x == eot).double()
        f_per_batch.append(torch.stack([first_token_attention_per_head(p)
                                        for p in out.attn_probs]))
        eot_per_batch.append(torch.stack([
            (p[:, :, 1:, :].double() * is_eot_BS[:, None, None, :]).sum(-1).mean()
            for p in out.attn_probs]))
    model.train(was_training)
    f_lh = torch.stack(f_per_batch).mean(0)
    return {"val": round(float(np.mean(losses)), 4),
            "f": [round(v, 3) for v in f_lh.mean(1).tolist()],
            "fmaxhead": [round(v, 3) for v in f_lh.max(1).values.tolist()],
            "eot": [round(v, 3) for v in torch.stack(eot_per_batch).mean(0).tolist()]}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = prepare_data(DataConfig(tokenizer=args.tokenizer, vocab_size=args.vocab,
                                   cache_dir=args.cache_dir))
    eot = data.tokenizer.eot_id
    backbone = Backbone(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads,
                        n_kv_heads=args.kv_heads, head_dim=args.head_dim, ffn_hidden=args.ffn,
                        vocab_size=data.vocab_size, qk_norm=args.qk_norm)
    torch.manual_seed(args.seed)
    model = GatedLM(backbone, load_variant(args.variant), "auto").to(device)
    opt = make_optimizer(model, load_recipe("tiny", {"lr": args.lr,
                                                     "weight_decay": args.weight_decay}))
    doc_eot = eot if args.windows == "document" else None
    starts = window_starts(data.train, args.seq_len, doc_eot) if doc_eot is not None else None
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(x.to(device), y.to(device))
               for x, y in eval_batches(data.val, 8, args.seq_len, 2, doc_eot)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        header = {"args": {k: str(v) for k, v in vars(args).items()},
                  "params": sum(p.numel() for p in model.parameters()), "eot": eot,
                  "vocab": data.vocab_size}
        _write(out, header)
        train_s = 0.0
        losses: list[float] = []
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            if args.schedule == "cosine":
                lr = lr_at(step - 1, args.lr, args.warmup, args.steps, 0.1)
            else:
                lr = args.lr * min(1.0, step / max(args.warmup, 1))
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = sample_batch(data.train, args.batch, args.seq_len, gen, starts)
            ce, aux = lm_loss(model, x.to(device), y.to(device))
            (ce + aux).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(ce.item())
            train_s += time.perf_counter() - t0
            last = step == args.steps or train_s > args.limit_s
            if step % args.every == 0 or last:
                _write(out, {"step": step, "t": round(train_s, 1),
                             "train": round(float(np.mean(losses)), 4),
                             **probe(model, batches, eot)})
                losses = []
            if last:
                break


def _write(out: IO[str], record: dict[str, object]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


if __name__ == "__main__":
    run(parse_args())
