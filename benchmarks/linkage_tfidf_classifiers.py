"""Off-the-shelf classifiers over the untrained TF-IDF pair features only: how much a matcher gains from them with
no encoder at all (a reference for ``model.rerank.tfidf`` with ``learned_features: false``).

Features: :class:`engine_linkage.tfidf.TfidfPairFeatures` with word and char analysers, of the whole record and of
each text field (idf on both tables), exactly as the task computes them. Classifiers (scikit-learn, fixed seeds):
logistic regression (C = 1, 10), an MLP (64, 64) and histogram gradient boosting (200 iterations). Trained on the
train pairs; threshold of max F1 on valid; F1 on test (``engine_linkage.metrics``).

    ENGINE_DATA_ROOT=../shared/data .venv/bin/python benchmarks/linkage_tfidf_classifiers.py \
        pipelines/linkage-textual-abt-buy.yaml pipelines/linkage-structured-walmart-amazon.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_linkage.metrics import best_threshold, classify  # noqa: E402
from engine_linkage.tfidf import TfidfPairFeatures  # noqa: E402
from linkage_tfidf_baseline import load  # noqa: E402


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+", type=Path)
    args = parser.parse_args()
    print("| set | classifier | features | test F1 | P | R | valid F1 | s |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for pipeline in args.pipelines:
        _, d = load(pipeline)
        fields = list(d.fields)
        text = [f for f, kind in d.fields.items() if kind == "text"]
        left = {f: d.left.values(f) for f in fields}
        right = None if d.dedup else {f: d.right.values(f) for f in fields}
        feats = TfidfPairFeatures(left, right, fields, ["word", "char"], per_field=text if len(text) > 1 else ())
        x = {s: feats(p.left, p.right) for s, p in d.pairs.items()}
        y = {s: p.label for s, p in d.pairs.items()}
        models = {"logistic regression C=1": LogisticRegression(max_iter=2000),
                  "logistic regression C=10": LogisticRegression(C=10, max_iter=2000),
                  "MLP (64, 64)": MLPClassifier((64, 64), max_iter=500, random_state=0),
                  "gradient boosting": HistGradientBoostingClassifier(max_iter=200, random_state=0)}
        for name, model in models.items():
            tic = time.perf_counter()
            model.fit(x["train"], y["train"])
            t, valid = best_threshold(model.predict_proba(x["valid"])[:, 1], y["valid"])
            test = classify(model.predict_proba(x["test"])[:, 1], y["test"], t)
            print(f"| {pipeline.stem.removeprefix('linkage-')} | {name} | {feats.width} | {test['f1']:.4f} | "
                  f"{test['precision']:.4f} | {test['recall']:.4f} | {valid['f1']:.4f} | "
                  f"{time.perf_counter() - tic:.1f} |", flush=True)


if __name__ == "__main__":
    main()
