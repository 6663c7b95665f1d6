"""A string-distance baseline on labelled pairs: one similarity of one field, a threshold, nothing learned.

For each DeepMatcher pair file (``{train,valid,test}.csv`` with ``label, left_<field>, right_<field>``; plain or
``.gz``), the pair's score is a similarity of the two values of ``--field`` (lower-cased, whitespace collapsed; a
missing value scores 0):

* ``jaro_winkler``: Jaro-Winkler similarity (``jellyfish``, a dependency of recordlinkage in the ``bench`` extra);
* ``levenshtein``: ``1 - d / max(len)``, the normalised Levenshtein distance;
* ``token_jaccard``: Jaccard similarity of the sets of words.

The protocol is the linkage task's (``engine_linkage.metrics``): the threshold of maximal F1 on ``valid``, applied
unchanged to ``test``; F1, precision and recall of the match class. Train is not used.

On a FEBRL 4a x 4b folder (``dataset4a.csv``, ``dataset4b.csv``, ``dataset4_true_links.csv``; the original or one
written by ``render_records.py``) the protocol is the ``febrl`` source's links protocol: the same entity split as the
pipelines (60/20/20, seed 0), and every left record of a split against every right record of it (no blocking, so
pair completeness is 1), a pair a match when it is a true link. Several ``--field`` are joined by a space (a missing
one left out) before comparing.

    .venv/bin/python benchmarks/string_distance.py out/rendered/abt-buy --field name
    .venv/bin/python benchmarks/string_distance.py out/rendered/febrl --field given_name --field surname
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_linkage.metrics import best_threshold, classify  # noqa: E402
from render_records import joined  # noqa: E402


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


def febrl_data(directory: Path, fields: list[str]):
    """The FEBRL 4a x 4b folder as the ``febrl`` source reads it, ``fields`` as text."""
    from engine_linkage.sources import FebrlSource

    return FebrlSource(str(directory), "4", fields={f: "text" for f in fields}).load()


def febrl_pairs(data, fields: list[str], split: str) -> tuple[list[str], list[str], np.ndarray]:
    """Every (left, right) record pair of ``split`` in the FEBRL links protocol (``data`` from :func:`febrl_data`):
    the joined, cleaned ``fields`` of each side and the 0/1 label (a true link)."""
    from engine_linkage.records import SPLITS

    code = SPLITS.index(split)
    rows = {side: np.flatnonzero(data.record_split[side] == code) for side in ("left", "right")}
    text = {side: [_clean(joined(table.columns[f][i] for f in fields)) for i in rows[side]]
            for side, table in (("left", data.left), ("right", data.right))}
    truth = data.pairs[split]
    pos = {(int(a), int(b)) for a, b in zip(truth.left, truth.right)}
    labels = np.array([(int(a), int(b)) in pos for a in rows["left"] for b in rows["right"]], dtype=np.int64)
    left = [a for a in text["left"] for _ in rows["right"]]
    right = text["right"] * len(rows["left"])
    return left, right, labels


def evaluate(directory: Path, field: str | list[str], method: str) -> dict:
    sim = METHODS[method]
    fields = [field] if isinstance(field, str) else list(field)
    febrl = (directory / "dataset4a.csv").is_file()
    if not febrl and len(fields) != 1:
        raise SystemExit(f"string_distance: {directory}: one --field on DeepMatcher pair files (got {fields})")
    tic = time.perf_counter()
    data = febrl_data(directory, fields) if febrl else None
    scores = {}
    for split in ("valid", "test"):
        left, right, labels = febrl_pairs(data, fields, split) if febrl else read_pairs(directory, split, fields[0])
        scores[split] = (np.array([sim(a, b) for a, b in zip(left, right)]), labels)
    threshold, _ = best_threshold(*scores["valid"])
    test = classify(*scores["test"], threshold)
    return {"method": method, "field": " + ".join(fields), "threshold": round(threshold, 4), **{k: round(v, 4)
            for k, v in test.items()}, "wall_s": round(time.perf_counter() - tic, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="a DeepMatcher-layout folder (pair files with left_/right_ columns) or "
                                            "a FEBRL 4a x 4b folder")
    ap.add_argument("--field", action="append", default=None, help="the field compared (default name); repeat to "
                                                                  "join several (FEBRL)")
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    args = ap.parse_args(argv)
    rows = [evaluate(args.data, args.field or ["name"], m) for m in args.methods]
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
