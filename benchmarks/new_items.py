"""New items through ``engine score --new-items`` on a real export (issue #7): the split's cold test items, given
again under new ids as a feature table, must score exactly as the model scores them (their content view), and the
job reports how fast items are embedded and users scored.

    benchmarks/new_items.py PIPELINE EXPORT_DIR [--set KEY=VALUE ...] [--out out/new_items]

EXPORT_DIR is what ``engine export PIPELINE -o EXPORT_DIR`` wrote (a model trained with ``model.content`` and
``data.cold_items``). Prints JSON: items embedded and seconds, the max abs difference between the new items' score
columns and their twins', the top-20 agreement of a scoring job with new items against the twins' ranks (seen items kept, since the twins, cold test items, are seen by their test users), rows/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("export")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default="out/new_items")
    parser.add_argument("--users", type=int, default=2000, help="users scored by the job")
    args = parser.parse_args()

    from engine.config import load_pipeline
    from engine.data.item_features import read_item_table, find_item_table
    from engine.run import prepare
    from engine_serving import ExportedModel, run_job

    cfg = load_pipeline(args.pipeline, args.overrides)
    task, _ = prepare(cfg)
    if task.cold is None:
        raise SystemExit(f"{args.pipeline}: no data.cold_items: nothing to compare new items with")
    model = ExportedModel(args.export, prefer_gpu=False)
    catalogue = model.item_ids
    cold_cols = np.asarray(task.cold.test)
    originals = catalogue.gather(pl.Series(cold_cols, dtype=pl.Int64))
    spec = cfg.data.item_features
    path = Path(spec.path) if spec.path else find_item_table(cfg.data.path)
    key, table, _ = read_item_table(path, spec.id_field)
    rows = table.with_columns(pl.col(key).cast(pl.String)).filter(pl.col(key).is_in(originals.cast(pl.String)
                                                                                   .implode()))
    offset = 10 ** (len(str(int(catalogue.max()))) + 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    new_path = out / "new_items.parquet"
    rows.with_columns((pl.col(key).cast(pl.Int64) + offset).alias("item")).drop(key if key != "item" else []) \
        .write_parquet(new_path)

    before = len(catalogue)
    start = time.perf_counter()
    added = model.add_items(new_path)
    embed_s = time.perf_counter() - start
    new_ids = model.item_ids.slice(before).cast(pl.Int64) - offset
    twin = {int(v): j for j, v in enumerate(catalogue.to_list()) if v is not None}
    twins = np.asarray([twin[int(i)] for i in new_ids.to_list()])
    users = np.arange(min(args.users, model.num_users))
    scores = np.concatenate([model.scores(users[s:s + 256]) for s in range(0, users.size, 256)])
    diff = float(np.abs(scores[:, before:] - scores[:, twins]).max())

    pl.DataFrame({"user": model.user_ids.gather(pl.Series(users))}).write_parquet(out / "users.parquet")
    job = run_job(model, str(out / "users.parquet"), str(out / "scored"), top_k=20, chunk_size=1000,
                  exclude_seen=False, progress=False)  # cold test twins are seen (test interactions)
    got = pl.read_parquet(out / "scored" / "*.parquet")
    new_hits = got.filter(pl.col("item") >= offset)
    # seen items kept: a new item sits in a user's top 20 exactly when its twin does (same score; ties aside)
    as_twin = new_hits.with_columns(pl.col("item") - offset)
    paired = as_twin.join(got, on=["user", "item"], how="inner")
    report = {"pipeline": args.pipeline, "new_items": added["new_items"], "skipped": added["new_items_skipped"],
              "embed_seconds": round(embed_s, 3), "items_per_second": round(added["new_items"] / embed_s, 1),
              "max_abs_score_diff_vs_twin": diff, "users_scored": int(job.rows),
              "rows_per_second": round(job.rows_per_second, 1), "new_items_in_top20": int(new_hits.height),
              "of_which_twin_also_in_top20": int(paired.height)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
