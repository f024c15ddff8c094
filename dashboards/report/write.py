"""``gatelab report``: every table and plot of a sweep, written to a folder.

``write_report(runs, out)`` writes ``tables/<name>.csv`` (typed columns), ``plots/<name>.png``,
``runs.parquet`` (the run frame, reloadable with ``pl.read_parquet``), ``report.md`` and
``report.html`` (everything in one self-contained file: images embedded as data URIs, no
script, no network), both from templates (``page.py``) and both leading with the
answer: the forest plot of effects on validation loss, the internals per variant, the verdicts
as sentences; then the tables and the other plots. ``summary_run.attach`` then logs the folder
to MLflow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from gatelab.contract import SINK_HEAD_THRESHOLD, Artifact
from gatelab.dashboards.report import headline, plots
from gatelab.dashboards.report.page import render_html, render_markdown
from gatelab.dashboards.report.parts import Plot, Report, Sentence, Table
from gatelab.dashboards.runs import Runs
from gatelab.dashboards.stats.sequential import PROCEDURE
from gatelab.dashboards.store.columns import DONE_STATUSES, layer_columns
from gatelab.dashboards.tables.compare import finished
from gatelab.dashboards.tables.lr_tolerance import DEGRADED_MARGIN
from gatelab.dashboards.verdicts.claims import Claim
from gatelab.dashboards.verdicts.text import verdict_sentence
from gatelab.metrics import Metric
from gatelab.verdict import Verdict

VERDICTS_DESCRIPTION = (
    "One row per claim (claims.yaml) and setting: on an LR grid a row per LR ('at') and one at "
    "each variant's best LR, never LRs pooled as seeds. reproduced: the paper's direction at "
    "the corrected level; not reproduced: the opposite direction; reproduced, but a control "
    "gains as much: the gain is there but the variant does not beat a control that lacks the "
    "paper's mechanism (controls column); inconclusive at this scale: neither (a sink claim "
    "also when the reference forms no sink head); undecided within the cap: --until-decided "
    "reached its last look. p_value is the raw p, p_adjusted the one the verdict uses after "
    "the procedure column's correction (Holm's step-down over the claims tested together, or "
    "the sequential design's alpha spending). scale ratio: m_act and f_attn compared as paired "
    "log-ratios, the estimate and interval a ratio. For an inconclusive verdict the statistic "
    "ends with the power, at the corrected level: mde, the smallest difference detectable at "
    "this n; seeds_needed, the seeds (pairs) that would decide the observed difference with "
    "80% power; power_note: why either is missing.")


VERDICT_COLUMNS = ("claim", "setting", "at", "verdict", "n", "estimate", "ci_low", "ci_high",
                   "scale", "p_value", "p_adjusted", "mde", "seeds_needed")
"""The verdict table's columns on the page (the sentences above it carry the rest; the CSV
file has every column: statement, statistic, controls, note, procedure...)."""


def build_tables(runs: Runs, claims: Sequence[Claim] | None = None) -> list[Table]:
    """The report's tables, in the order shown."""
    return [
        Table("verdicts", "Verdicts on the paper's claims", VERDICTS_DESCRIPTION,
              runs.verdicts(claims), VERDICT_COLUMNS),
        Table("table1", "Table 1: perplexity against the baseline",
              "Per setting and variant: n finished runs (n_diverged left out of means); "
              "mean ± 95% t-interval over seeds; d_val_ppl: paired change against the baseline "
              "on the same seeds, p_val_ppl: paired t-test. added_params: ours, at this size; "
              "paper_*: the paper's 15A2B numbers (PPL change against its 6.026 baseline); "
              "rank, paper_rank: the two orderings.", runs.table1()),
        Table("rank_agreement", "Ranking against the paper's",
              "Spearman's rank correlation between our mean PPL and the paper's over the "
              "variants that have both (exact permutation p-value up to 8 variants).",
              runs.rank_agreement()),
        Table("table4", "Table 4: gate scores, massive activations, attention sink",
              "Mean gate score and the fraction of scores below 0.1; m_act (max |hidden state| "
              "averaged over layers); f_attn (attention on the first token); d_*, p_*: paired "
              "change against the baseline and its t-test; paper_*: the paper's values.",
              runs.table4()),
        Table("lr_tolerance", "Learning-rate tolerance",
              "Final validation loss (mean ± 95% CI) per LR, or 'diverged k/n'; best LR; "
              "largest stable LR (no run diverged) and its ratio to the baseline's; largest LR "
              f"within {DEGRADED_MARGIN:g} nats of the variant's best (degraded beyond it, as "
              "the paper's Table 2 reads a baseline 'degraded'), the first degraded LR and the "
              "ratio to the baseline's.", runs.lr_tolerance()),
        Table("massive_activations_per_lr", "Massive activations per learning rate",
              "Mean m_act of the finished runs at each LR, and its growth from the smallest to "
              "the largest LR: massive activations grow by orders of magnitude with the LR.",
              runs.massive_activations_per_lr()),
        Table("families", "The gate and its alternatives, side by side",
              "Per setting and variant, grouped by family (paper gates, paper controls, "
              "SwitchHead, sink mitigations): finished runs, validation loss, f_attn, m_act, "
              "gate score, the per-head sink metrics and the step time (ms), mean ± 95% CI; "
              "d_*: the paired change against the baseline on the same seeds.",
              runs.families()),
        Table("sink_onset", "Sink onset",
              "Per run: the first evaluation step at which some layer's largest head put at "
              f"least {SINK_HEAD_THRESHOLD} of its attention on the first token (a sink head, "
              "Gu et al. 2024), and the largest share seen; with log-spaced evaluations (the "
              "sink-onset sweep) the onset is bracketed by its neighbours.", runs.sink_onset()),
        Table("stability", "Training stability",
              "Over finished and diverged runs: divergences, loss spikes, spike score (summed "
              "excess loss of spikes, nats), largest gradient norm before clipping; paired "
              "changes against the baseline.", runs.stability()),
        Table("long_context", "Long context",
              "Validation loss at 1x, 2x and 4x the training sequence length; ctx4x_gap = loss "
              "at 4x minus at 1x per run, and its paired change against the baseline.",
              runs.long_context()),
        *_position_tables(runs),
    ]


def _position_tables(runs: Runs) -> list[Table]:
    """The loss-by-position table, where runs recorded their loss per position bucket (the
    long-context sweep's stages)."""
    frame = runs.loss_by_length()
    if frame.is_empty():
        return []
    return [Table("loss_by_position", "Loss by position (long context, Table 5)",
                  "Per stage of the chain (train, then each stage continuing from the one "
                  "before: the context extension with its RoPE base, the evaluation under "
                  "YaRN), variant and evaluated length (multiple x the stage's training "
                  "length seq_len): n finished runs, the whole window's mean loss and the mean "
                  "loss in each equal position bucket (pos0 = the first positions). A loss "
                  "that rises in the last buckets of the longer windows is a model reading "
                  "beyond the positions it trained on.", frame)]


def draw_plots(runs: Runs, folder: Path) -> list[Plot]:
    """Every plot the runs have data for."""
    made: list[Plot] = []

    def add(key: str, title: str, description: str, path: Path | None) -> None:
        if path is not None:
            made.append(Plot(key, title, description, path))

    history = runs.history([Metric.TRAIN_LOSS, Metric.VAL_LOSS]) if len(runs) else None
    if history is not None:
        add("loss_curves", "Loss curves", "Training loss per variant, mean over seeds with the "
            "seeds' range as a band; dots: validation loss.",
            plots.loss_curves(runs.frame, history, folder / "loss_curves.png"))
    if len(runs):
        add("internals_over_training", "Attention sink and massive activations during training",
            "f_attn and m_act (means over layers) at each evaluation: whether and when a sink "
            "forms, and whether a gate prevents it.",
            plots.internals_over_training(runs.frame, runs.history([Metric.F_ATTN, Metric.M_ACT]),
                                          folder / "internals_over_training.png"))
        sink_layers = layer_columns(runs.frame.columns, plots.SINK_METRIC)
        if sink_layers:
            add("sink_metrics_over_training", "Sink heads during training",
                "The largest head's first-token share per layer at each evaluation, the "
                "baseline (dashed) against the gated variants; dotted: the sink-head threshold "
                f"{plots.SINK_HEAD_THRESHOLD} of Gu et al. 2024. A mean over heads (f_attn) "
                "hides a sink that lives in one head.",
                plots.sink_metrics_over_training(runs.frame, runs.history(sink_layers),
                                                 folder / "sink_metrics_over_training.png"))
    positions = runs.loss_by_position()
    if not positions.is_empty():
        add("position_loss", "Loss by position (long context)", "Mean validation loss per "
            "position bucket, one panel per stage (train, context extension, YaRN), per "
            "variant; the longest evaluated window solid, shorter ones faint; dotted: the "
            "length the stage trained at.",
            plots.position_loss(positions, folder / "position_loss.png"))
    add("loss_vs_lr", "Loss against learning rate", "Final validation loss per LR (mean ± 95% "
        "CI); x: LRs where runs diverged, with their count.",
        plots.loss_vs_lr(runs.frame, folder / "loss_vs_lr.png"))
    add("internals_per_layer", "Attention sink and massive activations per layer",
        "f_attn and m_act per layer, the baseline (dashed) against the gated variants.",
        plots.internals_per_layer(runs.frame, folder / "internals_per_layer.png"))
    add("gate_scores", "Gate scores per layer", "Per-layer mean gate score and fraction of "
        "scores below 0.1.", plots.gate_scores(runs.frame, folder / "gate_scores.png"))
    main = plots.main_setting(runs.frame)
    arrays = runs.arrays(runs.frame.filter(pl.col("setting_id") == main)["run_id"].to_list()
                         if main is not None else [])
    add("gate_histograms", "Gate-score histograms", "The distribution of gate scores of each "
        "gated variant over all layers and seeds (log density).",
        plots.gate_histograms(runs.frame, arrays, folder / "gate_histograms.png"))
    add("attention_maps", "Attention maps", "A few heads of one layer, the baseline against "
        "gated variants: a bright first column is an attention sink.",
        plots.attention_maps(runs.frame, arrays, folder / "attention_maps.png"))
    return made


def draw_headline(runs: Runs, folder: Path) -> list[Plot]:
    """The figures the report opens with: the forest plot of effects on validation loss, then
    the internals per variant."""
    made = []
    forest = headline.forest_plot(runs.frame, folder / "effects_forest.png")
    if forest is not None:
        made.append(Plot("effects_forest", "Each variant's effect on validation loss",
                         "Change in final validation loss against the baseline on the same "
                         "seeds (mean and 95% interval over paired seeds; left of 0 = better), "
                         "in the main setting; grey diamonds: the paper's effect, ln(PPL / "
                         "6.026).", forest[0], forest[1]))
    inside = headline.internals_plot(runs.frame, folder / "internals_by_variant.png")
    if inside is not None:
        made.append(Plot("internals_by_variant", "Sink, massive activations and gate scores",
                         "f_attn, m_act (log scale) and the mean gate score per variant (mean "
                         "and 95% interval over seeds), the paper's Table 4 values as diamonds.",
                         inside[0], inside[1]))
    return made


def _meta(runs: Runs) -> dict[str, str]:
    frame = runs.frame
    statuses = frame.group_by("status").len().sort("status")
    counts = ", ".join(f"{n} {s}" for s, n in statuses.iter_rows()) or "none"
    commits = sorted(c[:10] for c in frame["git_commit"].drop_nulls().unique().to_list())
    return {
        "tracking store": runs.store.uri,
        "experiment": runs.experiment or "(all)",
        "sweep": runs.sweep or "(all runs)",
        "runs": f"{frame.height} ({counts})",
        "variants": ", ".join(sorted(frame["variant"].drop_nulls().unique().to_list())) or "-",
        "settings": "; ".join(sorted(frame["setting"].drop_nulls().unique().to_list())) or "-",
        "seeds": ", ".join(map(str, sorted(frame["seed"].drop_nulls().unique().to_list())))
        or "-",
        "wall time": _wall_time(frame),
        "git commits": ", ".join(commits) or "-",
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _wall_time(frame: pl.DataFrame) -> str:
    """From the first run's start to the last run's end, and the runs' summed training time."""
    starts, ends = frame["start_time"].drop_nulls(), frame["end_time"].drop_nulls()
    if not starts.len() or not ends.len():
        return "-"
    span = (ends.max() - starts.min()).total_seconds() / 3600  # type: ignore[operator,union-attr]
    train = frame[Metric.TRAIN_TIME_S].drop_nulls().sum() / 3600
    return (f"{span:.2f} h from the first run's start to the last one's end; "
            f"{train:.2f} h of training summed over runs")


def _notes(runs: Runs, claims: Sequence[Claim] | None) -> list[str]:
    notes = []
    main = plots.main_setting(runs.frame)
    shown = finished(runs.frame).filter(pl.col("setting_id") == main)
    missing = shown.filter(~pl.col("run_id").is_in(list(runs.arrays(shown["run_id"].to_list()))))
    if missing.height:
        notes.append(f"{missing.height} finished runs have no {Artifact.INTERNALS} artifact "
                     "(recorded by an older gatelab): they are left out of the histograms and "
                     "maps.")
    left = runs.untested(claims)
    if left:
        notes.append("Claims these runs cannot test (their variants or an LR grid were not "
                     f"run): {', '.join(left)}.")
    excluded = runs.frame.filter(~pl.col("status").is_in(DONE_STATUSES)).height
    if excluded:
        notes.append(f"{excluded} runs that failed or did not end are listed in the run count "
                     "but left out of every table.")
    design = runs.design()
    if design is not None:
        notes.append(f"Seeds until decided: {PROCEDURE}; at most {design.max_seeds} seeds, "
                     f"looks at {', '.join(map(str, design.looks))} seeds, alpha "
                     f"{design.alpha:g} over the whole sequence.")
    if runs.frame.height and runs.frame["seed"].n_unique() < 2:
        notes.append("One seed per setting: no confidence interval or p-value can be computed; "
                     "every verdict is inconclusive. Run several seeds.")
    return notes


def write_report(runs: Runs, out: Path, title: str | None = None,
                 claims: Sequence[Claim] | None = None) -> Report:
    """Write the report of ``runs`` into ``out`` (created; files of a previous report of the
    same names are replaced); ``claims``: the claims to judge (``load_claims()``)."""
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"gatelab report: {runs.sweep or 'all runs'}"
    tables = build_tables(runs, claims)
    files: list[Path] = []
    (out / "tables").mkdir(exist_ok=True)
    for table in tables:
        path = out / "tables" / f"{table.key}.csv"
        table.frame.write_csv(path)
        files.append(path)
    made = draw_plots(runs, out / "plots")
    top = draw_headline(runs, out / "plots")
    files += [p.path for p in top + made]
    verdict_rows = tables[0].frame
    sentences = [Sentence(verdict_sentence(r), Verdict(r["verdict"]))
                 for r in verdict_rows.iter_rows(named=True)]
    runs.frame.write_parquet(out / "runs.parquet")
    files.append(out / "runs.parquet")
    report = Report(title, _meta(runs), tables, made, _notes(runs, claims), out, len(runs),
                    files, top, sentences)
    report.markdown_path.write_text(render_markdown(report))
    report.html_path.write_text(render_html(report))
    files += [report.markdown_path, report.html_path]
    return report
