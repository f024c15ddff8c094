"""The short text summary ``gatelab train`` prints at the end of a run."""

from __future__ import annotations

from gatelab.metrics import Metric, context_metric
from gatelab.runners.run.result import RunResult

ROWS: tuple[tuple[str, str, str], ...] = (
    (Metric.VAL_LOSS, "validation loss (nats/token)", "{:.4f}"),
    (Metric.VAL_PPL, "validation perplexity", "{:.2f}"),
    (Metric.VAL_BPB, "bits per byte", "{:.4f}"),
    (context_metric(1), "loss at 1x train length", "{:.4f}"),
    (context_metric(2), "loss at 2x train length", "{:.4f}"),
    (context_metric(4), "loss at 4x train length", "{:.4f}"),
    (Metric.F_ATTN, "f_attn (first-token attention)", "{:.3f}"),
    (Metric.M_ACT, "m_act (max |hidden|, layer mean)", "{:.1f}"),
    (Metric.GATE_SCORE_MEAN, "mean gate score", "{:.3f}"),
    (Metric.GATE_SCORE_FRAC_BELOW_01, "gate scores < 0.1", "{:.1%}"),
    (Metric.LOSS_SPIKES, "loss spikes", "{:.0f}"),
    (Metric.SPIKE_SCORE, "spike score (excess nats)", "{:.3f}"),
    (Metric.MAX_GRAD_NORM, "max gradient norm", "{:.3f}"),
    (Metric.TOKENS_PER_S, "throughput (tokens/s)", "{:,.0f}"),
    (Metric.FLOPS_PER_TOKEN, "model FLOPs per token", "{:.3g}"),
    (Metric.ACHIEVED_FLOPS, "achieved FLOP/s", "{:.3g}"),
    (Metric.MFU, "MFU (of the GPU's bf16 peak)", "{:.1%}"),
    (Metric.PEAK_DEVICE_MEM_GB, "peak GPU memory (GB)", "{:.2f}"),
    (Metric.PEAK_RSS_GB, "peak process memory (GB, RSS)", "{:.2f}"),
    (Metric.TRAIN_TIME_S, "training time (s)", "{:.1f}"),
    (Metric.MEASURE_TIME_S, "measurement time (s)", "{:.1f}"),
)
"""The metrics printed (where the run logged them), their labels and formats."""


def format_summary(variant: str, result: RunResult) -> str:
    head = f"{variant}: {result.status}"
    if result.skipped:
        head += " (already recorded for this hash; nothing trained)"
    summary = result.summary
    if summary is not None and summary.diverged_step is not None:
        head += f" at step {summary.diverged_step}"
    lines = [head, f"  run {result.run_id}  hash {result.run_hash}"]
    if summary is None:
        return "\n".join(lines)
    if summary.divergence:
        lines.append(f"  {summary.divergence}")
    metrics = summary.to_metrics()
    for name, label, fmt in ROWS:
        value = metrics.get(name)
        if value is not None:
            lines.append(f"  {label:34s} {fmt.format(value)}")
    return "\n".join(lines)
