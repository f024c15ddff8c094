"""PNG plots of recorded runs, drawn with matplotlib's Agg canvas (no pyplot, no display, and
the backend of a notebook that imports this is left alone).

- ``loss_curves``: training loss per variant (mean over seeds, band: the seeds' range) and the
  validation loss at its evaluation steps, one panel per setting.
- ``loss_vs_lr``: final validation loss against the learning rate per variant; diverged LRs
  are marked with their count.
- ``sink_metrics_over_training``: the largest head's first-token share per layer at each
  evaluation, the baseline against the gates, with the sink-head threshold marked.
- ``internals_per_layer``: ``f_attn`` and ``m_act`` per layer, the baseline against the gates.
- ``gate_scores``: the mean gate score and the fraction of scores below 0.1, per layer.
- ``gate_histograms``: the distribution of gate scores per gated variant (from each run's
  ``internals.npz``, ``dashboards/store/artifacts.py``).
- ``attention_maps``: a few heads' attention maps, the baseline against gated variants.
- ``position_loss``: loss against position at each evaluated length, one panel per stage of
  the long-context chain (train, extend, YaRN), the training length marked.

Each function returns the path it wrote, or ``None`` when the runs hold nothing to plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gatelab.contract import SINK_HEAD_THRESHOLD
from gatelab.dashboards.store.artifacts import RunArrays
from gatelab.dashboards.store.columns import layer_columns
from gatelab.dashboards.tables.compare import REFERENCE, finished
from gatelab.dashboards.tables.lr_tolerance import lr_grid
from gatelab.metrics import Metric

MAX_PANELS = 4
"""Loss-curve panels: the settings with the most finished runs."""
DPI = 110
MAX_HIST_PANELS = 9
PREFERRED_MAPS = ("g1-elementwise", "g1-headwise")
"""Gated variants shown beside the baseline's attention maps when the runs have them."""
SINK_METRIC = Metric.SINK_HEAD_MAX
"""The runner's per-layer metric of the largest head's first-token share (``.layerXX``)."""
SINK_PANEL_COLUMNS = 4


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """A fixed colour per variant: the baseline black, the others tab10 in sorted order."""
    palette = [f"C{i}" for i in range(10)]
    others = sorted(v for v in set(variants) if v != REFERENCE)
    colors = {v: palette[i % len(palette)] for i, v in enumerate(others)}
    colors[REFERENCE] = "black"
    return colors


def main_setting(runs: pl.DataFrame) -> str | None:
    """The ``setting_id`` with the most finished runs (``None`` if none finished)."""
    fin = finished(runs)
    if fin.is_empty():
        return None
    counts = fin.group_by("setting_id").len().sort("len", "setting_id", descending=[True, False])
    return str(counts["setting_id"][0])


def setting_name(runs: pl.DataFrame, setting_id: str) -> str:
    return str(runs.filter(pl.col("setting_id") == setting_id)["setting"][0])


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[:window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def loss_curves(runs: pl.DataFrame, history: pl.DataFrame, path: Path) -> Path | None:
    """``history``: the ``train_loss`` and ``val_loss`` points of ``runs`` (``Runs.history``)."""
    fin = finished(runs)
    hist = history.join(fin.select("run_id", "variant", "setting_id", "seed"), on="run_id")
    if hist.is_empty():
        return None
    settings = (fin.group_by("setting_id").len()
                .sort("len", "setting_id", descending=[True, False])["setting_id"]
                .head(MAX_PANELS).to_list())
    colors = variant_colors(fin["variant"].to_list())
    fig = new_figure(max(7.5, 6.0 * len(settings)), 4.4)
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    for ax, sid in zip(axes, settings, strict=True):
        _loss_panel(ax, hist.filter(pl.col("setting_id") == sid), colors)
        ax.set_title(setting_name(runs, sid), fontsize=9)
    fig.suptitle("Loss per variant: line = mean over seeds (smoothed), band = range over "
                 "seeds, dots = validation loss", fontsize=10)
    return save_png(fig, path)


def _loss_panel(ax: Axes, hist: pl.DataFrame, colors: dict[str, str]) -> None:
    train = hist.filter(pl.col("metric") == Metric.TRAIN_LOSS).sort("step")
    steps_max = int(train.select(pl.col("step").max()).item() or 1) if train.height else 1
    window = max(1, steps_max // 25)
    for variant in sorted(hist["variant"].unique().to_list(),
                          key=lambda v: (v != REFERENCE, v)):
        mine = train.filter(pl.col("variant") == variant)
        curves = []
        for _, run in mine.group_by("run_id"):
            run = run.sort("step")
            curves.append(run.with_columns(
                pl.Series("smooth", _smooth(run["value"].to_numpy(), window))))
        if curves:
            band = (pl.concat(curves).group_by("step").agg(
                pl.col("smooth").mean().alias("mean"), pl.col("smooth").min().alias("lo"),
                pl.col("smooth").max().alias("hi"), pl.len().alias("n")).sort("step"))
            n = int(mine["run_id"].n_unique())
            ax.plot(band["step"], band["mean"], color=colors[variant], lw=1.4,
                    label=f"{variant} (n={n})")
            ax.fill_between(band["step"], band["lo"], band["hi"], color=colors[variant],
                            alpha=0.18, lw=0)
        val = (hist.filter((pl.col("metric") == Metric.VAL_LOSS) & (pl.col("variant") == variant))
               .group_by("step").agg(pl.col("value").mean()).sort("step"))
        if not val.is_empty():
            ax.plot(val["step"], val["value"], "o", color=colors[variant], ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_bands(ax: Axes, mine: pl.DataFrame, colors: dict[str, str]) -> None:
    """One line per variant (the baseline first, dashed) with its band over seeds."""
    for variant in sorted(mine["variant"].unique().to_list(), key=lambda v: (v != REFERENCE, v)):
        band = _band(mine.filter(pl.col("variant") == variant))
        ax.plot(band["step"], band["mean"], color=colors[variant], marker="o", ms=3,
                ls="--" if variant == REFERENCE else "-", label=variant)
        ax.fill_between(band["step"], band["lo"], band["hi"], color=colors[variant],
                        alpha=0.18, lw=0)


def _band(rows: pl.DataFrame) -> pl.DataFrame:
    """Per step: the mean, min and max of ``value`` (over seeds)."""
    return (rows.group_by("step")
            .agg(pl.col("value").mean().alias("mean"), pl.col("value").min().alias("lo"),
                 pl.col("value").max().alias("hi")).sort("step"))


def internals_over_training(runs: pl.DataFrame, history: pl.DataFrame, path: Path
                            ) -> Path | None:
    """``f_attn`` and ``m_act`` (means over layers) at each evaluation step, per variant of
    the main setting (mean over seeds, band: the seeds' range): when a sink or a massive
    activation forms, and whether a gate prevents it. ``history``: their points
    (``Runs.history``)."""
    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    hist = history.join(fin.select("run_id", "variant"), on="run_id")
    if hist.is_empty() or hist["step"].n_unique() < 2:
        return None
    colors = variant_colors(fin["variant"].to_list())
    fig = new_figure(11.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, (Metric.F_ATTN, Metric.M_ACT), strict=True):
        mine = hist.filter(pl.col("metric") == metric)
        _draw_bands(ax, mine, colors)
        if metric == Metric.F_ATTN:
            _mark_uniform_share(ax, fin)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{metric} (mean over layers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{setting_name(runs, sid)}\nattention on the first token and max |hidden "
                 "state| during training (mean over seeds, band = range)", fontsize=9)
    return save_png(fig, path)


def sink_metrics_over_training(runs: pl.DataFrame, history: pl.DataFrame, path: Path
                               ) -> Path | None:
    """One panel per layer: ``sink_head_max`` (the largest head's first-token share) at each
    evaluation step, per variant of the main setting (mean over seeds, band: the seeds'
    range), with ``SINK_HEAD_THRESHOLD`` marked: whether a sink forms in a single head, which
    ``f_attn``'s mean over heads hides. ``history``: the ``sink_head_max.layerXX`` points
    (``Runs.history``); other metrics are ignored."""
    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    hist = history.join(fin.select("run_id", "variant"), on="run_id")
    layers = layer_columns(hist["metric"].unique().to_list(), SINK_METRIC)
    if not layers or hist.filter(pl.col("metric").is_in(layers))["step"].n_unique() < 2:
        return None
    colors = variant_colors(fin["variant"].to_list())
    cols = min(SINK_PANEL_COLUMNS, len(layers))
    rows = -(-len(layers) // cols)
    fig = new_figure(max(6.0, 3.6 * cols), 3.0 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for k, (ax, metric) in enumerate(zip(axes, layers, strict=False)):
        mine = hist.filter(pl.col("metric") == metric)
        _draw_bands(ax, mine, colors)
        ax.axhline(SINK_HEAD_THRESHOLD, color="red", ls=":", lw=1,
                   label=f"sink head (> {SINK_HEAD_THRESHOLD})")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"layer {int(metric.rsplit('layer', 1)[1])}", fontsize=9)
        ax.set_xlabel("step")
        if k % cols == 0:
            ax.set_ylabel("largest head's first-token share")
        ax.grid(alpha=0.3)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{setting_name(runs, sid)}\nthe most sink-like head of each layer during "
                 "training (mean over seeds, band = range); dotted: the sink-head threshold of "
                 "Gu et al. 2024", fontsize=9)
    return save_png(fig, path)


def position_loss(table: pl.DataFrame, path: Path) -> Path | None:
    """One panel per stage (``dashboards/tables/long_context.py``'s ``loss_by_position`` table):
    the mean loss in each position bucket against the bucket's middle position (log scale),
    per variant; the longest evaluated window solid, the shorter ones faint; dotted: the length
    the stage trained at, beyond which a model reads positions it never saw."""
    if table.is_empty():
        return None
    stages = table.select("depth", "stage").unique().sort("depth", "stage").rows()
    colors = variant_colors(table["variant"].to_list())
    fig = new_figure(max(6.0, 4.2 * len(stages)), 3.8)
    axes = fig.subplots(1, len(stages), squeeze=False, sharey=True).ravel()
    for k, (ax, (depth, stage)) in enumerate(zip(axes, stages, strict=True)):
        mine = table.filter((pl.col("depth") == depth) & (pl.col("stage") == stage))
        longest = mine["multiple"].max()
        for (variant, multiple), rows in mine.group_by("variant", "multiple", maintain_order=True):
            rows = rows.sort("bucket")
            middle = (rows["pos_start"] + rows["pos_end"]).to_numpy() / 2
            solid = multiple == longest
            ax.plot(middle, rows["loss"].to_numpy(), color=colors[str(variant)],
                    marker="o" if solid else None, ms=3, lw=1.6 if solid else 0.8,
                    alpha=1.0 if solid else 0.35,
                    label=f"{variant} ({int(rows['eval_len'][0])} tokens)" if solid else None)
        first = mine.row(0, named=True)
        ax.axvline(first["seq_len"], color="grey", ls=":", lw=1, label="trained length")
        yarn = first["yarn_factor"]
        ax.set_title(f"{stage}: trained at {first['seq_len']}, RoPE base "
                     f"{first['rope_base']:g}" + (f", YaRN x{yarn:g}" if yarn else ""),
                     fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("position (bucket middle, tokens)")
        if k == 0:
            ax.set_ylabel("validation loss (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Loss by position at 1x..8x each stage's length (mean over seeds); faint: "
                 "the shorter windows", fontsize=9)
    return save_png(fig, path)


def loss_vs_lr(runs: pl.DataFrame, path: Path) -> Path | None:
    """Needs a grid of at least two LRs; the grid with the most runs is drawn."""
    grid = lr_grid(runs)
    if grid.is_empty():
        return None
    sizes = (grid.group_by("lr_setting_id").agg(pl.col("lr").n_unique().alias("lrs"),
                                                  (pl.col("n") + pl.col("n_diverged")).sum()
                                                  .alias("runs"))
             .filter(pl.col("lrs") >= 2).sort("runs", "lr_setting_id",
                                               descending=[True, False]))
    if sizes.is_empty():
        return None
    grid = grid.filter(pl.col("lr_setting_id") == sizes["lr_setting_id"][0])
    colors = variant_colors(grid["variant"].to_list())
    highest = grid.select(pl.col(Metric.VAL_LOSS).max()).item()
    top = float(highest) + 0.1 if highest is not None else 1.0
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    variants = sorted(grid["variant"].unique().to_list(), key=lambda v: (v != REFERENCE, v))
    for i, variant in enumerate(variants):
        # Variants side by side around each LR (a few percent apart on the log axis).
        dodge = 10 ** (0.025 * (i - (len(variants) - 1) / 2))
        mine = grid.filter(pl.col("variant") == variant).sort("lr")
        ok = mine.filter(pl.col(Metric.VAL_LOSS).is_not_null())
        ax.errorbar(ok["lr"] * dodge, ok[Metric.VAL_LOSS], yerr=ok["val_loss_ci95"].fill_null(0.0),
                    color=colors[variant], marker="o", capsize=3, label=variant)
        for row in mine.filter(pl.col("n_diverged") > 0).iter_rows(named=True):
            ax.plot([row["lr"] * dodge], [top], "x", color=colors[variant], ms=8, mew=2)
            ax.annotate(f"{row['n_diverged']}/{row['n'] + row['n_diverged']}",
                        (row["lr"] * dodge, top), textcoords="offset points",
                        xytext=(-6, 6 + 9 * i), fontsize=7, color=colors[variant])
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats)")
    ax.set_title(f"{grid['lr_setting'][0]}: mean ± 95% CI; x = diverged (k/n)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _per_layer(runs: pl.DataFrame, metric: Metric) -> tuple[list[str], pl.DataFrame]:
    """The per-layer columns of ``metric`` that some run recorded, and those runs."""
    cols = layer_columns(runs.columns, metric)
    present = [c for c in cols if runs[c].is_not_null().any()]
    if not present:
        return [], runs.clear()
    return present, runs.filter(pl.any_horizontal(pl.col(present).is_not_null()))


def internals_per_layer(runs: pl.DataFrame, path: Path) -> Path | None:
    """Mean over the seeds of the main setting (the one with most finished runs)."""
    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    panels = [(m, *_per_layer(fin, m)) for m in (Metric.F_ATTN, Metric.M_ACT)]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    colors = variant_colors(fin["variant"].to_list())
    fig = new_figure(5.5 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, cols, rows) in zip(axes, panels, strict=True):
        layers = np.arange(len(cols))
        for variant in sorted(rows["variant"].unique().to_list(),
                              key=lambda v: (v != REFERENCE, v)):
            mine = rows.filter(pl.col("variant") == variant).select(cols).to_numpy()
            mean = np.nanmean(mine, axis=0)
            ax.errorbar(layers, mean,
                        yerr=[mean - np.nanmin(mine, axis=0), np.nanmax(mine, axis=0) - mean],
                        color=colors[variant], marker="o", capsize=2,
                        ls="--" if variant == REFERENCE else "-",
                        lw=2 if variant == REFERENCE else 1.2,
                        label=f"{variant} (n={mine.shape[0]})")
        if metric == Metric.F_ATTN:
            _mark_uniform_share(ax, rows)
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric)
        ax.set_title({Metric.F_ATTN: "attention on the first token (sink)",
                      Metric.M_ACT: "max |hidden state| (massive activations)"}[metric], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{setting_name(runs, sid)}: mean over seeds, bars = range", fontsize=10)
    return save_png(fig, path)


def uniform_first_token_share(seq_len: int) -> float:
    """``f_attn`` of uniform causal attention over ``seq_len`` tokens: query i puts 1/(i+1) on
    the first token; the mean over queries 1..T-1 is (H_T - 1) / (T - 1)."""
    return sum(1.0 / (i + 1) for i in range(1, seq_len)) / (seq_len - 1)


def _mark_uniform_share(ax: Axes, rows: pl.DataFrame) -> None:
    """A dotted line at the ``f_attn`` of uniform attention, when ``rows`` share one
    sequence length."""
    if "recipe.seq_len" not in rows.columns:
        return
    values = rows["recipe.seq_len"].drop_nulls().unique().to_list()
    if len(values) == 1 and int(values[0]) > 1:
        seq_len = int(values[0])
        ax.axhline(uniform_first_token_share(seq_len), color="grey", ls=":", lw=1,
                   label=f"uniform attention (T={seq_len})")


def gate_scores(runs: pl.DataFrame, path: Path) -> Path | None:
    """Bars per layer for each gated variant of the main setting."""
    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    mean_cols, rows = _per_layer(fin, Metric.GATE_SCORE_MEAN)
    if not mean_cols:
        return None
    frac_cols = layer_columns(rows.columns, Metric.GATE_SCORE_FRAC_BELOW_01)
    variants = sorted(rows["variant"].unique().to_list())
    colors = variant_colors(fin["variant"].to_list())
    fig = new_figure(11.0, 4.0)
    axes = fig.subplots(1, 2)
    width = 0.8 / len(variants)
    layers = np.arange(len(mean_cols))
    for ax, cols, label in ((axes[0], mean_cols, "mean gate score"),
                            (axes[1], frac_cols, "fraction of scores < 0.1")):
        for i, variant in enumerate(variants):
            mine = rows.filter(pl.col("variant") == variant).select(cols).to_numpy()
            mean = np.nanmean(mine, axis=0)
            ax.bar(layers + (i - (len(variants) - 1) / 2) * width, mean, width,
                   yerr=[mean - np.nanmin(mine, axis=0), np.nanmax(mine, axis=0) - mean],
                   color=colors[variant], capsize=2, label=f"{variant} (n={mine.shape[0]})")
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.suptitle(f"{setting_name(runs, sid)}: per-layer summaries (mean over seeds, bars = "
                 "range)", fontsize=10)
    return save_png(fig, path)


def gate_histograms(runs: pl.DataFrame, arrays: dict[str, RunArrays], path: Path
                    ) -> Path | None:
    """One panel per gated variant of the main setting: the distribution of its gate scores
    over all layers and seeds (density per bin of [0, 1], log scale), with the shares below 0
    and above 1 (unbounded activations) in the title."""
    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    per_variant: dict[str, list[RunArrays]] = {}
    for rid, variant in fin.select("run_id", "variant").iter_rows():
        got = arrays.get(rid)
        if got is not None and got.gate_hist.size and got.gate_hist.sum() > 0:
            per_variant.setdefault(variant, []).append(got)
    if not per_variant:
        return None
    variants = sorted(per_variant)[:MAX_HIST_PANELS]
    colors = variant_colors(fin["variant"].to_list())
    cols = min(3, len(variants))
    rows = -(-len(variants) // cols)
    fig = new_figure(max(6.5, 4.2 * cols), 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, variant in zip(axes, variants, strict=False):
        counts = np.sum([a.gate_hist.sum(axis=0) for a in per_variant[variant]], axis=0)
        edges = per_variant[variant][0].hist_edges
        total = counts.sum()
        inside = counts[1:-1] / total / np.diff(edges)
        positive = inside[inside > 0]
        floor = float(positive.min()) / 3 if positive.size else 1e-6
        ax.stairs(np.maximum(inside, floor / 10), edges, color=colors[variant], fill=True,
                  alpha=0.6)  # empty bins drawn below the axis: not shown
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
        ax.set_xlim(0, 1)
        ax.set_xlabel("gate score")
        ax.set_ylabel("density")
        below_01 = counts[1:1 + int(round(0.1 * (len(edges) - 1)))].sum() + counts[0]
        ax.set_title(f"{variant} (n={len(per_variant[variant])}): {below_01 / total:.0%} < 0.1"
                     f", {counts[0] / total:.0%} < 0, {counts[-1] / total:.0%} > 1", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(variants):]:
        ax.set_visible(False)
    fig.suptitle(f"{setting_name(runs, sid)}\ngate-score distribution over all layers and "
                 "seeds, on fixed validation batches", fontsize=9)
    return save_png(fig, path)


def attention_maps(runs: pl.DataFrame, arrays: dict[str, RunArrays], path: Path
                   ) -> Path | None:
    """The baseline against up to two gated variants (rows), a few heads (columns) of one
    layer: the layer where the baseline puts most attention on the first token. Each map is
    the first measured sequence of the lowest seed, its first positions; colour on a power
    scale so that small probabilities stay visible."""
    from matplotlib.colors import PowerNorm

    sid = main_setting(runs)
    if sid is None:
        return None
    fin = finished(runs).filter(pl.col("setting_id") == sid).sort("seed")
    first: dict[str, RunArrays] = {}
    for rid, variant in fin.select("run_id", "variant").iter_rows():
        got = arrays.get(rid)
        if got is not None and got.attn_maps is not None and variant not in first:
            first[variant] = got
    if not first:
        return None
    gated = [v for v in PREFERRED_MAPS if v in first and v != REFERENCE]
    gated += sorted(v for v in first if v not in gated and v != REFERENCE)
    shown = ([REFERENCE] if REFERENCE in first else []) + gated[:2]
    anchor = first[shown[0]]
    maps0 = anchor.attn_maps
    assert maps0 is not None
    layer = int(np.argmax(anchor.f_attn)) if shown[0] == REFERENCE else maps0.shape[0] - 1
    heads = maps0.shape[1]
    fig = new_figure(2.6 * heads + 0.8, 2.5 * len(shown))
    axes = fig.subplots(len(shown), heads, squeeze=False)
    norm = PowerNorm(gamma=0.4, vmin=0.0, vmax=1.0)
    image = None
    for r, variant in enumerate(shown):
        maps = first[variant].attn_maps
        assert maps is not None
        lay = min(layer, maps.shape[0] - 1)
        for h in range(heads):
            ax = axes[r, h]
            if h >= maps.shape[1]:
                ax.set_visible(False)
                continue
            m = maps[lay, h]
            image = ax.imshow(m, cmap="viridis", norm=norm, interpolation="nearest")
            ax.set_title(f"{variant}\nlayer {lay} head {h}: first token "
                         f"{m[1:, 0].mean():.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="probability")
    fig.suptitle(f"{setting_name(runs, sid)}\nattention maps (rows: queries, columns: keys; "
                 "key 0 on the left)", fontsize=9)
    return save_png(fig, path)
