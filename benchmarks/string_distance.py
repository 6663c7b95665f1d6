"""A string-distance baseline on labelled pairs: one similarity of one field, a threshold, nothing learned.

For each DeepMatcher pair file (``{train,valid,test}.csv`` with ``label, left_<field>, right_<field>``; plain or
``.gz``), the pair's score is a similarity of the two values of ``--field`` (lower-cased, whitespace collapsed; a
missing value scores 0):

* ``jaro_winkler``: Jaro-Winkler similarity (``jellyfish``, a dependency of recordlinkage in the ``bench`` extra);
* ``levenshtein``: ``1 - d / max(len)``, the normalised Levenshtein distance;
* ``token_jaccard``: Jaccard similarity of the sets of words.

The protocol is the linkage task's (``engine_linkage.metrics``): the threshold of maximal F1 on ``valid``, applied
unchanged to ``test``; F1, precision and recall of the match class. Train is not used.

    .venv/bin/python benchmarks/string_distance.py out/rendered/abt-buy --field name
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))

from engine_linkage.metrics import best_threshold, classify  # noqa: E402


def _clean(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip().lower()


def jaro_winkler(a: str, b: str) -> float:
    import jellyfish

    return float(jellyfish.jaro_winkler_similarity(a, b)) if a and b else 0.0


def levenshtein(a: str, b: str) -> float:
    import jellyfish

    return 1.0 - jellyfish.levenshtein_distance(a, b) / max(len(a), len(b)) if a and b else 0.0


def token_jaccard(a: str, b: str) -> float:
    sa, sb = set(a.split()), set(b.split())
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


METHODS = {"jaro_winkler": jaro_winkler, "levenshtein": levenshtein, "token_jaccard": token_jaccard}


def read_pairs(directory: Path, split: str, field: str) -> tuple[list[str], list[str], np.ndarray]:
    for name in (f"{split}.csv", f"{split}.csv.gz"):
        if (directory / name).is_file():
            df = pl.read_csv(directory / name, infer_schema=False)
            break
    else:
        raise SystemExit(f"string_distance: {directory}: missing {split}.csv")
    for col in ("label", f"left_{field}", f"right_{field}"):
        if col not in df.columns:
            raise SystemExit(f"string_distance: {directory / name}: missing column {col!r}")
    return ([_clean(v) for v in df[f"left_{field}"].to_list()], [_clean(v) for v in df[f"right_{field}"].to_list()],
            df["label"].cast(pl.Int64).to_numpy())


def evaluate(directory: Path, field: str, method: str) -> dict:
    sim = METHODS[method]
    tic = time.perf_counter()
    scores = {}
    for split in ("valid", "test"):
        left, right, labels = read_pairs(directory, split, field)
        scores[split] = (np.array([sim(a, b) for a, b in zip(left, right)]), labels)
    threshold, _ = best_threshold(*scores["valid"])
    test = classify(*scores["test"], threshold)
    return {"method": method, "field": field, "threshold": round(threshold, 4), **{k: round(v, 4)
            for k, v in test.items()}, "wall_s": round(time.perf_counter() - tic, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="a DeepMatcher-layout folder (pair files with left_/right_ columns)")
    ap.add_argument("--field", default="name")
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    args = ap.parse_args(argv)
    rows = [evaluate(args.data, args.field, m) for m in args.methods]
    print("| method | field | test F1 | precision | recall | threshold (valid) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['field']} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
              f"{r['threshold']} | {r['wall_s']} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
