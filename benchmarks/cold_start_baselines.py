"""Cold-start baselines on a content pipeline's own split: popularity and content nearest neighbours.

Both are evaluated by the same code as the trained models (:func:`engine.evaluate.cold.cold_warm_ranking`) on the
same split (the pipeline's ``data`` block, cold items held out identically):

* ``popularity``: an item's number of training interactions (cold items have none, so among cold items the order
  is arbitrary: the floor a content model must beat);
* ``content_knn``: item-based content nearest neighbours, :math:`s(u, i) = \\sum_{j \\in \\mathrm{train}(u)}
  \\mathrm{sim}(i, j)`, where sim is the mean over fields of the cosine of TF-IDF token vectors (id fields) and of the
  pretrained vectors (MiniLM for text when the pipeline names ``sentence``): no training, content only.

    .venv/bin/python benchmarks/cold_start_baselines.py pipelines/content-ml100k.yaml [--split test] [--out FILE]
    .venv/bin/python benchmarks/cold_start_baselines.py pipelines/content-beauty.yaml   # sequences: the history
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]


def _frames(task, split: str):
    """``(num_users, score columns, each user's profile items, items to exclude, targets)`` as (user, item) frames.

    Graph CF: the profile is the training interactions, train (and valid at test) items are excluded. Sequences:
    the profile is the history the model would read (the training prefix, plus the validation item at test), which
    is excluded with the padding column 0 (``mask_history``), and the target is the next item.
    """
    d = task.data
    if task.name != "seqrec":
        seen = pl.concat([f.select("user", "item") for f in ([d.train] + ([d.valid] if split == "test" else []))])
        return d.num_users, d.num_items, d.train.select("user", "item").unique(), seen, \
            (d.valid if split == "valid" else d.test)
    users = torch.arange(d.num_users)
    indptr, items = d.history(split)
    owner = torch.repeat_interleave(users, indptr[1:] - indptr[:-1])
    history = pl.DataFrame({"user": owner.numpy(), "item": items.numpy()})
    padding = pl.DataFrame({"user": users.numpy(), "item": np.zeros(d.num_users, dtype=np.int64)})
    target = pl.DataFrame({"user": users.numpy(), "item": d.target(split).numpy()})
    return d.num_users, d.num_items + 1, history.unique(), pl.concat([history, padding]), target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pipeline")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from engine.config import load_pipeline
    from engine.content import content_knn
    from engine.evaluate.cold import cold_warm_ranking
    from engine.fields import build_field_encoders, featurize_fields
    from engine.plugins import get_registry

    cfg = load_pipeline(args.pipeline, args.overrides)
    registry = get_registry()
    task = registry.get("task", cfg.task).cls(cfg, registry)
    task.load_data()
    cold, feats = task.cold, task.item_features
    if cold is None or feats is None:
        print(f"{args.pipeline}: needs data.item_features and data.cold_items", file=sys.stderr)
        return 2
    num_users, num_items, profile, seen, target = _frames(task, args.split)
    train = profile
    warm = np.flatnonzero(task.warm.numpy()) if hasattr(task.warm, "numpy") else np.asarray(task.warm)
    ev = cfg.evaluate
    results = {}

    counts = torch.from_numpy(np.bincount(train["item"].to_numpy(), minlength=num_items).astype(np.float32))
    tic = time.perf_counter()
    results["popularity"] = cold_warm_ranking(lambda u: counts.expand(u.numel(), -1), target, seen, num_users,
                                              num_items, cold.of_split(args.split), warm, ev.ks, ev.metrics)
    results["popularity"]["seconds"] = round(time.perf_counter() - tic, 2)

    tic = time.perf_counter()
    specs = cfg.model.content.encoders if cfg.model.content is not None else {}
    encoders = build_field_encoders(registry, feats.fields, specs, 64, where="model.content.encoders")
    features = featurize_fields(feats.fields, feats.columns, encoders, specs)
    nbr, sim = content_knn(features, num_items, np.arange(num_items))  # every other item: the full matrix
    full = torch.zeros(num_items, num_items)
    full.scatter_(1, nbr, sim.clamp(min=0))

    def knn_scores(users: torch.Tensor) -> torch.Tensor:
        start, stop = int(users.min()), int(users.max()) + 1
        block = torch.zeros(stop - start, num_items)
        sub = train.filter(pl.col("user").is_between(start, stop - 1))
        block[sub["user"].to_numpy() - start, sub["item"].to_numpy()] = 1.0
        return (block @ full)[users - start]

    results["content_knn"] = cold_warm_ranking(knn_scores, target, seen, num_users, num_items,
                                               cold.of_split(args.split), warm, ev.ks, ev.metrics)
    results["content_knn"]["seconds"] = round(time.perf_counter() - tic, 2)

    for name, r in results.items():
        print(name, json.dumps({k: round(v, 4) for k, v in r.items()}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
