"""The loss-by-position tables from a frame of a train -> extend -> YaRN chain (two variants, two
seeds): buckets become position ranges, seeds are averaged, stages come in chain order."""

from __future__ import annotations

import polars as pl

from gatelab.dashboards.tables.long_context import loss_by_length, loss_by_position


def chain_frame() -> pl.DataFrame:
    rows = []
    for variant in ("baseline", "g1-elementwise"):
        for seed in (0, 1):
            parent = None
            for depth, (stage, seq_len, rope, yarn) in enumerate(
                    [(None, 64, 1e4, None), ("extend", 256, 1e6, None),
                     ("yarn", 256, 1e6, 8.0)]):
                run_hash = f"{variant}-{seed}-{depth}"
                row = {"run_id": f"id-{run_hash}", "run_hash": run_hash, "status": "finished",
                       "variant": variant, "seed": seed, "setting": f"s{depth}",
                       "stage": stage, "parent_hash": parent, "recipe.seq_len": seq_len,
                       "backbone.rope_base": rope, "recipe.yarn.factor": yarn}
                for m in (1, 2):
                    row[f"val_loss_ctx{m}x"] = 3.0 + m + seed
                    for b in range(4):
                        row[f"val_loss_ctx{m}x.pos{b}"] = 3.0 + m + b / 10 + seed
                rows.append(row)
                parent = run_hash
    rows.append({**rows[0], "run_id": "failed", "run_hash": "f", "status": "failed"})
    return pl.DataFrame(rows)


def test_loss_by_position_has_a_row_per_stage_variant_length_and_bucket() -> None:
    table = loss_by_position(chain_frame())
    assert table.height == 3 * 2 * 2 * 4
    assert table["stage"].unique(maintain_order=True).to_list() == ["train", "extend", "yarn"]
    assert table["depth"].unique(maintain_order=True).to_list() == [0, 1, 2]
    row = table.filter((pl.col("stage") == "extend") & (pl.col("variant") == "baseline")
                       & (pl.col("multiple") == 2) & (pl.col("bucket") == 3)).row(0, named=True)
    assert (row["eval_len"], row["pos_start"], row["pos_end"]) == (512, 384, 512)
    assert row["n"] == 2  # the failed run is left out
    assert abs(row["loss"] - (5.3 + 0.5)) < 1e-12  # seeds 0 and 1: 5.3 and 6.3
    assert (row["loss_min"], row["loss_max"]) == (5.3, 6.3)
    yarn = table.filter(pl.col("stage") == "yarn")
    assert set(yarn["yarn_factor"].to_list()) == {8.0}
    assert set(table.filter(pl.col("stage") == "train")["rope_base"].to_list()) == {1e4}


def test_loss_by_length_has_a_column_per_bucket_and_the_whole_windows_loss() -> None:
    table = loss_by_length(chain_frame())
    assert table.height == 3 * 2 * 2
    assert table.columns[-4:] == ["pos0", "pos1", "pos2", "pos3"]
    first = table.row(0, named=True)
    assert (first["stage"], first["variant"], first["multiple"]) == ("train", "baseline", 1)
    assert abs(first["loss"] - 4.5) < 1e-12 and first["n"] == 2
    assert abs(first["pos3"] - 4.8) < 1e-12


def test_runs_without_position_buckets_give_empty_tables() -> None:
    frame = chain_frame().select(pl.exclude("^val_loss_ctx.*pos.*$"))
    assert loss_by_position(frame).is_empty() and loss_by_length(frame).is_empty()
