"""Why the char n-gram bi-encoder loses to an untrained TF-IDF cosine: the same pairs scored by untrained cosines
over what the encoder sees, one difference at a time.

For a pipeline whose text encoder is ``char_ngram`` (default ``pipelines/linkage-textual-abt-buy.yaml``), each
record becomes one bag of terms (the union over its fields, each term prefixed by its field) and a pair's score is
the cosine of the two bags; the protocol is the linkage task's (threshold of max F1 on valid, F1 on test). Rows:

* ``tfidf char_wb3``: the baseline of ``linkage_tfidf_baseline.py`` (all fields joined into one text);
* ``encoder set, truncated``: exactly the encoder's input: the distinct ``w:word`` tokens then ``#text#`` 3-grams of
  each text field, cut at ``max_ngrams`` per value (``char_ngram.char_ngrams``), binary weights: what a mean-pooled
  bag with an untrained (random) embedding approximates, without idf;
* ``encoder set``: the same without the ``max_ngrams`` cut;
* ``encoder set + idf``: the same terms, idf-weighted (``TfidfTransformer``, binary tf);
* ``encoder set, truncated + idf``: the encoder's exact input, idf-weighted;
* ``encoder set, truncated, fields pooled``: the terms of all fields in one bag (no field prefix: a word of the
  name on one side meets the same word in the other side's description), with and without idf.

Numeric fields are left out of the bags (the encoder reads them as numbers). Hashing collisions are not modelled
(65,536 buckets against a few ten thousand distinct terms).

    ENGINE_DATA_ROOT=../shared/data .venv/bin/python benchmarks/linkage_tfidf_diagnosis.py \
        pipelines/linkage-textual-abt-buy.yaml pipelines/linkage-structured-walmart-amazon.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_linkage.char_ngram import char_ngrams, normalize_text  # noqa: E402
from engine_linkage.metrics import best_threshold, classify  # noqa: E402
from engine_linkage.tfidf import TfidfSimilarity, pair_cosine, record_texts  # noqa: E402
from linkage_tfidf_baseline import load  # noqa: E402


def bags(table, fields, opts, cap: bool, prefix: bool = True) -> list[list[str]]:
    out = []
    for i in range(len(table)):
        terms = []
        for f in fields:
            grams = char_ngrams(normalize_text(table.values(f)[i]), opts["ngram_sizes"], opts["words"])
            terms += [f"{f}|{g}" if prefix else g for g in (grams[: opts["max_ngrams"]] if cap else grams)]
        out.append(terms)
    return out


def score(lm, rm, data) -> dict:
    s = {k: pair_cosine(lm, rm, p.left, p.right) for k, p in data.pairs.items()}
    t, valid = best_threshold(s["valid"], data.pairs["valid"].label)
    return {"valid_f1": valid["f1"], **classify(s["test"], data.pairs["test"].label, t)}


def main() -> None:
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="*", type=Path,
                        default=[ROOT / "pipelines" / "linkage-textual-abt-buy.yaml"])
    args = parser.parse_args()
    rows = []
    for pipeline in args.pipelines:
        cfg, data = load(pipeline)
        enc = cfg.model.encoders["text"].model_dump()
        if enc["name"] != "char_ngram":
            raise SystemExit(f"{pipeline}: the text encoder is {enc['name']!r}, not char_ngram")
        opts = {"ngram_sizes": (3,), "words": False, "max_ngrams": 64}  # the encoder's defaults
        opts.update({k: v for k, v in enc.items() if k in opts})
        text = [f for f, kind in data.fields.items() if kind == "text"]
        label = pipeline.stem.removeprefix("linkage-")
        fields = list(data.fields)
        lt, rt = record_texts(data.left.columns, fields), record_texts(data.right_table.columns, fields)
        sim = TfidfSimilarity("char").fit(lt + rt)
        rows.append({"set": label, "scores": "tfidf char_wb3 (all fields)",
                     **score(sim.transform(lt), sim.transform(rt), data)})
        for cap, prefix in ((True, True), (False, True), (True, False)):
            lb, rb = bags(data.left, text, opts, cap, prefix), bags(data.right_table, text, opts, cap, prefix)
            vec = CountVectorizer(analyzer=lambda terms: terms, binary=True).fit(lb + rb)
            lc, rc = vec.transform(lb), vec.transform(rb)
            for idf in (False, True):
                tr = TfidfTransformer(use_idf=idf).fit(sparse.vstack([lc, rc]))  # idf on both tables
                name = ("encoder set" + (", truncated" if cap else "") + ("" if prefix else ", fields pooled")
                        + (" + idf" if idf else ""))
                rows.append({"set": label, "scores": name, **score(tr.transform(lc), tr.transform(rc), data)})
        n_cut = sum(len(char_ngrams(normalize_text(v), opts["ngram_sizes"], opts["words"])) > opts["max_ngrams"]
                    for f in text for v in data.left.values(f) + data.right_table.values(f))
        n_all = sum(1 for f in text for v in data.left.values(f) + data.right_table.values(f) if v)
        rows.append({"set": label, "scores": f"values cut at max_ngrams={opts['max_ngrams']}: {n_cut} of {n_all}",
                     "f1": float("nan"), "precision": float("nan"), "recall": float("nan"),
                     "valid_f1": float("nan")})
        for r in rows[-8:]:
            print(json.dumps(r), flush=True)
    print("| set | scores (untrained) | test F1 | P | R | valid F1 |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['set']} | {r['scores']} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
              f"{r['valid_f1']:.4f} |")


if __name__ == "__main__":
    main()
