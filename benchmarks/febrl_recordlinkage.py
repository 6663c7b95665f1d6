"""FEBRL side by side: the ``recordlinkage`` toolkit's classical pipeline and ours, on the same test protocol.

One command runs, for each pipeline named (default: ``pipelines/linkage-febrl4.yaml`` and
``pipelines/linkage-febrl3.yaml``):

(a) recordlinkage 0.16 (a benchmark dependency: ``pip install -e plugins/linkage[bench]``), in this process:

* records and splits: read by our own data source from the pipeline's ``data:`` block (the same code path as
  ``engine run``), so the entity split into train / valid / test, the test records and the true test links are
  exactly those our pipeline is scored on;
* blocking among the split's records (as ours does): the union of standard blocks on ``given_name``, ``surname``,
  ``postcode`` and ``date_of_birth`` (``--blocking blocks``, default), the three name/postcode blocks of its docs
  (``blocks3``), or sorted neighbourhoods on the names (window 9) plus blocks on postcode and date of birth
  (``sorted``);
* comparisons: Jaro-Winkler on the names, Levenshtein on address, suburb, date of birth and soc-sec id, exact on
  street number, postcode and state (similarities in [0, 1]; a missing value compares as 0);
* three classifiers: **ECM** (unsupervised; fitted on the test comparison vectors with string similarities cut at
  0.85, its own 0.5 posterior rule), **logistic regression** (trained on the train split's candidate pairs labelled
  by the true train links; threshold of maximal F1 on valid, as ours), and the docs' **rule** (the sum of the
  binarised comparisons; cut of maximal F1 on valid).

(b) ours: ``engine run PIPELINE --no-track --metrics-out ...`` in a subprocess (one thread).

Scoring is ``engine_linkage.metrics`` for both: a candidate is a true link when it is one of the split's true links;
a true link that blocking missed is a false negative; pair completeness and reduction ratio of the split's
candidates. Wall time of a recordlinkage row: reading the data + indexing and comparing every split it uses +
fitting and predicting (its breakdown is printed); of ours: the whole ``engine run`` (interpreter start, torch
import, training with early stopping, evaluation, ONNX-free).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/febrl_recordlinkage.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/febrl_recordlinkage.py pipelines/linkage-febrl4.yaml --skip-ours

The table (markdown) and rows (JSON) go to ``--out`` (default ``out/linkage/febrl_recordlinkage.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: (field, method): Jaro-Winkler / Levenshtein similarity or exact equality
COMPARISONS = (("given_name", "jarowinkler"), ("surname", "jarowinkler"), ("street_number", "exact"),
               ("address_1", "levenshtein"), ("address_2", "levenshtein"), ("suburb", "levenshtein"),
               ("postcode", "exact"), ("state", "exact"), ("date_of_birth", "levenshtein"),
               ("soc_sec_id", "levenshtein"))
BINARY_CUT = 0.85  #: string similarity at or above which a field agrees (ECM and the rule)
BLOCKINGS = ("blocks", "blocks3", "sorted")
COLUMNS = ("f1", "precision", "recall", "pair_completeness", "reduction_ratio", "candidates", "wall_s")


def require_recordlinkage():
    try:
        import recordlinkage
    except ModuleNotFoundError:
        raise SystemExit("this benchmark needs the recordlinkage toolkit: "
                         ".venv/bin/pip install -e 'plugins/linkage[bench]' (recordlinkage==0.16)") from None
    return recordlinkage


def load_data(pipeline: Path):
    """The pipeline's linkage data, read by its own data source (same split, same true links as ``engine run``)."""
    from engine.config import load_pipeline
    from engine.plugins import get_registry

    registry = get_registry()
    cfg = load_pipeline(pipeline, registry=registry)
    return cfg, cfg.data.build(registry).load()


def frame(table, rows: np.ndarray, fields):
    import pandas as pd

    return pd.DataFrame({f: [table.columns[f][i] for i in rows] for f in fields},
                        index=pd.Index(rows, name="row"))


def indexer(rl, blocking: str):
    ix = rl.Index()
    if blocking == "sorted":
        ix.sortedneighbourhood("surname", window=9)
        ix.sortedneighbourhood("given_name", window=9)
        ix.block("postcode")
        ix.block("date_of_birth")
    else:
        ix.block("given_name")
        ix.block("surname")
        ix.block("postcode")
        if blocking == "blocks":
            ix.block("date_of_birth")
    return ix


def comparator(rl):
    c = rl.Compare(n_jobs=1)
    for f, method in COMPARISONS:
        if method == "exact":
            c.exact(f, f, label=f)
        else:
            c.string(f, f, method=method, label=f, missing_value=0.0)
    return c


class Split:
    """Candidates and comparison vectors of one split's records, with their labels."""

    def __init__(self, rl, data, split: str, blocking: str) -> None:
        import pandas as pd

        from engine_linkage.metrics import pair_keys, reduction_ratio

        d = data
        lrows, rrows = d.split_records(split)
        fields = list(d.fields)
        tic = time.perf_counter()
        a = frame(d.left, lrows, fields)
        b = None if d.dedup else frame(d.right, rrows, fields)
        cand = indexer(rl, blocking).index(a) if b is None else indexer(rl, blocking).index(a, b)
        li = cand.get_level_values(0).to_numpy(np.int64)
        ri = cand.get_level_values(1).to_numpy(np.int64)
        if d.dedup:  # unordered pairs (i < j), as our blocking and the true links
            li, ri = np.minimum(li, ri), np.maximum(li, ri)
        n_right = len(d.right_table)
        keys = np.unique(pair_keys(li, ri, n_right))
        li, ri = keys // n_right, keys % n_right
        self.index_s = time.perf_counter() - tic
        tic = time.perf_counter()
        pairs = pd.MultiIndex.from_arrays([li, ri], names=["row_1", "row_2"])
        feats = comparator(rl).compute(pairs, a) if b is None else comparator(rl).compute(pairs, a, b)
        self.compare_s = time.perf_counter() - tic
        self.features = feats[[f for f, _ in COMPARISONS]].astype(np.float64)
        truth = d.pairs[split].positives()
        true_keys = np.unique(pair_keys(truth.left, truth.right, n_right))
        self.labels = np.isin(keys, true_keys).astype(np.int64)
        self.missed = int(true_keys.size - self.labels.sum())
        self.pairs = pairs
        self.blocking = {"pair_completeness": float(self.labels.sum() / max(true_keys.size, 1)),
                         "reduction_ratio": reduction_ratio(int(keys.size), lrows.shape[0],
                                                            None if d.dedup else rrows.shape[0]),
                         "candidates": int(keys.size)}

    @property
    def seconds(self) -> float:
        return self.index_s + self.compare_s

    def binary(self):
        return (self.features >= BINARY_CUT).astype(np.int64)

    def match_index(self):
        return self.pairs[self.labels == 1]


def run_recordlinkage(rl, data, blocking: str, load_s: float) -> list[dict]:
    from engine_linkage.metrics import best_threshold, classify

    splits = {s: Split(rl, data, s, blocking) for s in ("train", "valid", "test")}
    test = splits["test"]
    rows = []

    def row(method: str, metrics: dict, seconds: float, detail: dict) -> None:
        rows.append({"method": method, **{k: metrics[k] for k in ("f1", "precision", "recall")},
                     **test.blocking, "wall_s": round(seconds, 2), **detail})

    # ECM: unsupervised, fitted on the test comparison vectors, its own decision rule
    tic = time.perf_counter()
    ecm = rl.ECMClassifier(binarize=None)
    pred = ecm.fit_predict(test.binary())
    fit_s = time.perf_counter() - tic
    predicted = np.asarray(test.pairs.isin(pred), dtype=np.float64)
    row("recordlinkage ECM (unsupervised)", classify(predicted, test.labels, 0.5, test.missed),
        load_s + test.seconds + fit_s,
        {"breakdown": {"load": load_s, "index": test.index_s, "compare": test.compare_s, "fit_predict": fit_s}})

    # logistic regression on the train candidates, threshold of max F1 on valid
    tic = time.perf_counter()
    lr = rl.LogisticRegressionClassifier()
    lr.fit(splits["train"].features, splits["train"].match_index())
    threshold, _ = best_threshold(lr.prob(splits["valid"].features).to_numpy(), splits["valid"].labels,
                                  splits["valid"].missed)
    metrics = classify(lr.prob(test.features).to_numpy(), test.labels, threshold, test.missed)
    fit_s = time.perf_counter() - tic
    every = sum(s.seconds for s in splits.values())
    row("recordlinkage logistic regression (train; t on valid)", metrics, load_s + every + fit_s,
        {"threshold": threshold, "breakdown": {"load": load_s, **{f"index_compare_{k}": s.seconds
                                                                   for k, s in splits.items()}, "fit_predict": fit_s}})

    # the docs' rule: number of agreeing fields, cut of max F1 on valid
    tic = time.perf_counter()
    threshold, _ = best_threshold(splits["valid"].binary().sum(axis=1).to_numpy(), splits["valid"].labels,
                                  splits["valid"].missed)
    metrics = classify(test.binary().sum(axis=1).to_numpy(), test.labels, threshold, test.missed)
    fit_s = time.perf_counter() - tic
    row("recordlinkage rule: agreeing fields (t on valid)", metrics,
        load_s + splits["valid"].seconds + test.seconds + fit_s, {"threshold": threshold})
    return rows


def run_ours(pipeline: Path, out_dir: Path) -> dict:
    name = pipeline.stem
    metrics_path = out_dir / f"{name}.json"
    cmd = [str(ROOT / ".venv/bin/engine"), "run", str(pipeline), "--no-track", "--metrics-out", str(metrics_path),
           "--set", f"train.checkpoint_dir={out_dir / 'checkpoints'}",
           "--set", f"model.matches_out={out_dir / name / 'matches.parquet'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    tic = time.perf_counter()
    with open(out_dir / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - tic
    if rc != 0 or not metrics_path.is_file():
        raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}); see {out_dir / f'{name}.log'}")
    m = json.loads(metrics_path.read_text())
    return {"method": "ours: engine run (char n-gram bi-encoder + pair classifier, faiss top-k)",
            **{k: m.get(k) for k in ("f1", "precision", "recall", "pair_completeness", "reduction_ratio")},
            "candidates": int(m.get("num_candidates", 0)), "wall_s": round(wall, 2),
            "detail": {"train_seconds": m.get("train_seconds"), "best_epoch": m.get("best_epoch"),
                       "epochs": m.get("epochs"), "threshold": m.get("threshold"), "command": " ".join(cmd)}}


def table(results: list[dict]) -> str:
    head = ["set", "method", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for r in results:
        cells = [r["set"], r["method"]]
        for k in COLUMNS:
            v = r.get(k)
            cells.append("–" if v is None else f"{v:.4f}" if isinstance(v, float) and k != "wall_s" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="*", type=Path,
                        default=[ROOT / "pipelines/linkage-febrl4.yaml", ROOT / "pipelines/linkage-febrl3.yaml"])
    parser.add_argument("--blocking", choices=BLOCKINGS, default="blocks", help="recordlinkage's blocking")
    parser.add_argument("--skip-ours", action="store_true", help="only the recordlinkage pipeline")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "linkage")
    args = parser.parse_args()
    rl = require_recordlinkage()
    import torch

    torch.set_num_threads(1)
    out_dir = args.out / "febrl_recordlinkage"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for pipeline in args.pipelines:
        pipeline = pipeline.resolve()
        tic = time.perf_counter()
        cfg, data = load_data(pipeline)
        load_s = time.perf_counter() - tic
        if data.protocol != "links":
            raise SystemExit(f"{pipeline}: expected a FEBRL pipeline (links protocol), got {data.protocol!r}")
        label = f"{cfg.name} ({'dedup' if data.dedup else 'link'}, test: {len(data.pairs['test'])} true links)"
        rows = run_recordlinkage(rl, data, args.blocking, load_s)
        if not args.skip_ours:
            rows.append(run_ours(pipeline, out_dir))
        for r in rows:
            r["set"] = label
            r["blocking"] = args.blocking if r["method"].startswith("recordlinkage") else "faiss top-k"
            print(json.dumps(r), flush=True)
        results += rows
        (args.out / "febrl_recordlinkage.json").write_text(json.dumps(results, indent=2, default=float))
    md = table(results)
    (args.out / "febrl_recordlinkage.md").write_text(md)
    print(md)
    print(f"load average: {os.getloadavg()}; recordlinkage blocking: {args.blocking}")


if __name__ == "__main__":
    sys.exit(main())
