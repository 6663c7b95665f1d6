"""The untrained TF-IDF cosine baseline on the DeepMatcher / Magellan sets: nothing learned but a threshold.

For each pipeline (default: one per DeepMatcher set, ``pipelines/linkage-{structured,dirty,textual}-<set>.yaml``),
the data is loaded exactly as ``engine run`` loads it (the pipeline's ``data`` block, so the same splits, records
and fields as the model rows), each record's fields are joined into one text, and a pair's score is the cosine of
the two TF-IDF vectors (:mod:`engine_linkage.tfidf`: word unigrams, or character 3-grams). The protocol is the
linkage task's (``engine_linkage.metrics``): the threshold of maximal F1 on the valid pairs, applied unchanged to the
test pairs; F1, precision, recall of the match class on test. No label is used except for that threshold.

The idf is fitted (``--fit``) on ``tables``: every record of both tables (the full tableA / tableB where the set has
them, else the records of all splits' pairs; no labels), or ``train``: only the records that appear in train pairs.

    ENGINE_DATA_ROOT=../shared/data .venv/bin/python benchmarks/linkage_tfidf_baseline.py
    .venv/bin/python benchmarks/linkage_tfidf_baseline.py pipelines/linkage-textual-abt-buy.yaml --fit train

Writes ``--out`` (default ``out/linkage/tfidf``): ``summary.json`` (every row) and ``summary.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))

from engine_linkage.metrics import best_threshold, classify  # noqa: E402
from engine_linkage.tfidf import TfidfSimilarity, pair_cosine, record_texts  # noqa: E402

#: one pipeline per DeepMatcher set in ../shared/data (Beer is in the Ditto layout only)
SETS = ["structured-dblp-acm", "structured-dblp-googlescholar", "structured-fodors-zagats",
        "structured-walmart-amazon", "structured-itunes-amazon", "structured-beer", "dirty-dblp-acm",
        "dirty-dblp-googlescholar", "dirty-walmart-amazon", "dirty-itunes-amazon", "textual-abt-buy"]


def load(pipeline: Path):
    from engine.config import load_pipeline
    from engine.plugins import get_registry

    registry = get_registry()
    cfg = load_pipeline(pipeline, registry=registry)
    return cfg, cfg.data.build(registry).load()


def baseline(data, analyzer: str, fit: str) -> dict:
    """Valid-tuned threshold, test metrics of the TF-IDF cosine of ``analyzer`` over the joined fields."""
    fields = list(data.fields)
    left = record_texts(data.left.columns, fields)
    right = left if data.dedup else record_texts(data.right.columns, fields)
    if fit == "tables":
        corpus = left + ([] if data.dedup else right)
    else:
        tr = data.pairs["train"]
        corpus = [left[i] for i in np.unique(tr.left)] + [right[i] for i in np.unique(tr.right)]
    sim = TfidfSimilarity(analyzer).fit(corpus)
    lm = sim.transform(left)
    rm = lm if data.dedup else sim.transform(right)
    scores = {s: pair_cosine(lm, rm, p.left, p.right) for s, p in data.pairs.items()}
    threshold, valid = best_threshold(scores["valid"], data.pairs["valid"].label)
    test = classify(scores["test"], data.pairs["test"].label, threshold)
    return {"analyzer": analyzer, "fit": fit, "threshold": threshold, "valid_f1": valid["f1"], **test,
            "vocabulary": len(sim.vectorizer.vocabulary_)}


def table(rows: list[dict]) -> str:
    head = ["set", "analyzer", "fit", "F1", "P", "R", "threshold", "valid F1", "train/valid/test pairs", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['analyzer']} | {r['fit']} | {r['f1']:.4f} | {r['precision']:.4f} | "
                     f"{r['recall']:.4f} | {r['threshold']:.4f} | {r['valid_f1']:.4f} | {r['pairs']} | "
                     f"{r['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="*", type=Path, help="default: one pipeline per DeepMatcher set")
    parser.add_argument("--analyzer", action="append", choices=["word", "char"], help="default: word and char")
    parser.add_argument("--fit", action="append", choices=["tables", "train"], help="default: tables")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "linkage" / "tfidf")
    args = parser.parse_args()
    pipelines = args.pipelines or [ROOT / "pipelines" / f"linkage-{s}.yaml" for s in SETS]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for pipeline in pipelines:
        tic = time.perf_counter()
        _, data = load(pipeline)
        load_s = time.perf_counter() - tic
        label = pipeline.stem.removeprefix("linkage-")
        pairs = "/".join(f"{len(data.pairs[s]):,} ({data.pairs[s].num_pos:,})" for s in ("train", "valid", "test"))
        for fit in args.fit or ["tables"]:
            for analyzer in args.analyzer or ["word", "char"]:
                t0 = time.perf_counter()
                row = baseline(data, analyzer, fit)
                row.update({"set": label, "pipeline": str(pipeline.relative_to(ROOT) if pipeline.is_absolute()
                                                          and ROOT in pipeline.parents else pipeline),
                            "fields": list(data.fields), "full_tables": bool(data.full_tables), "pairs": pairs,
                            "load_s": round(load_s, 1), "wall_s": round(time.perf_counter() - t0, 2)})
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("set", "analyzer", "fit", "f1", "valid_f1", "wall_s")}),
                      flush=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    (args.out / "summary.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
