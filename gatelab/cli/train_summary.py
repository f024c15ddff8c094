"""The short text summary ``gatelab train`` prints at the end of a run."""

from __future__ import annotations

from gatelab.runners.run.result import RunResult

ROWS = (
    ("val_loss", "validation loss (nats/token)", "{:.4f}"),
    ("val_ppl", "validation perplexity", "{:.2f}"),
    ("val_bpb", "bits per byte", "{:.4f}"),
    ("val_loss_ctx1x", "loss at 1x train length", "{:.4f}"),
    ("val_loss_ctx2x", "loss at 2x train length", "{:.4f}"),
    ("val_loss_ctx4x", "loss at 4x train length", "{:.4f}"),
    ("f_attn", "f_attn (first-token attention)", "{:.3f}"),
    ("m_act", "m_act (max |hidden|, layer mean)", "{:.1f}"),
    ("gate_score.mean", "mean gate score", "{:.3f}"),
    ("gate_score.frac_below_0.1", "gate scores < 0.1", "{:.1%}"),
    ("loss_spikes", "loss spikes", "{:.0f}"),
    ("spike_score", "spike score (excess nats)", "{:.3f}"),
    ("max_grad_norm", "max gradient norm", "{:.3f}"),
    ("tokens_per_s", "throughput (tokens/s)", "{:,.0f}"),
    ("flops_per_token", "model FLOPs per token", "{:.3g}"),
    ("achieved_flops", "achieved FLOP/s", "{:.3g}"),
    ("mfu", "MFU (of the GPU's bf16 peak)", "{:.1%}"),
    ("peak_device_mem_gb", "peak GPU memory (GB)", "{:.2f}"),
    ("peak_rss_gb", "peak process memory (GB, RSS)", "{:.2f}"),
    ("train_time_s", "training time (s)", "{:.1f}"),
    ("measure_time_s", "measurement time (s)", "{:.1f}"),
)


def format_summary(variant: str, result: RunResult) -> str:
    head = f"{variant}: {result.status}"
    if result.skipped:
        head += " (already recorded for this hash; nothing trained)"
    if "diverged_step" in result.summary:
        head += f" at step {int(result.summary['diverged_step'])}"
    lines = [head, f"  run {result.run_id}  hash {result.run_hash}"]
    if result.summary.get("divergence"):
        lines.append(f"  {result.summary['divergence']}")
    for key, label, fmt in ROWS:
        value = result.summary.get(key)
        if isinstance(value, int | float):
            lines.append(f"  {label:34s} {fmt.format(value)}")
    return "\n".join(lines)
