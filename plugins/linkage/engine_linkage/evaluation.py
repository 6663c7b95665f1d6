"""The evaluation protocols of the ``linkage`` task (see :mod:`engine_linkage.task`): blocking candidates, the
threshold chosen on ``valid`` by maximal F1, the scorer choice (``rerank.cosine_fallback``, ``rerank.tfidf_fallback``),
and the test matches
with their clustering. A mixin of :class:`engine_linkage.task.LinkageTask`, which provides ``data``, ``model_cfg``,
``block``, ``score_pairs``, ``_record_vectors`` and ``default_scorer``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import best_threshold, classify, cluster_prf, connected_components, pair_completeness, pair_keys, \
    reduction_ratio

__all__ = ["LinkageEvaluation"]


class LinkageEvaluation:
    """``evaluate`` of the linkage task: pairs protocol (DeepMatcher / Magellan) and links protocol (FEBRL)."""

    def _candidates(self, model, split: str | None):
        """Blocking: candidate pairs among the split's records (links) or the full tables (pairs)."""
        d = self.data
        if d.protocol == "links":
            lrows, rrows = d.split_records(split)
        else:
            lrows = np.arange(len(d.left))
            rrows = lrows if d.dedup else np.arange(len(d.right))
        ul = self._record_vectors(model, "left", lrows)
        ur = ul if d.dedup else self._record_vectors(model, "right", rrows)
        li, ri = self.block(ul, ur, lrows, rrows, self.model_cfg.blocking_k)
        return lrows[li], rrows[ri], lrows, rrows

    def _split_scores(self, model, split: str) -> dict[str, Any]:
        """Scores and labels of what is classified on ``split``, with blocking figures where blocking runs."""
        d = self.data
        n_right = len(d.right_table)
        truth = d.pairs[split].positives()
        true_keys = pair_keys(truth.left, truth.right, n_right)
        if d.protocol == "pairs":
            p = d.pairs[split]
            out = {"left": p.left, "right": p.right, "scores": self.score_pairs(model, p.left, p.right),
                   "labels": p.label, "missed": 0}
            if d.full_tables and split == "test":
                cl, cr, lrows, rrows = self._candidates(model, None)
                out["blocking"] = self._blocking_figures(cl, cr, lrows, rrows, true_keys)
                out["candidates"] = (cl, cr)
            return out
        cl, cr, lrows, rrows = self._candidates(model, split)
        keys = pair_keys(cl, cr, n_right)
        labels = np.isin(keys, true_keys).astype(np.int64)
        missed = int(np.unique(true_keys).size - labels.sum())
        return {"left": cl, "right": cr, "scores": self.score_pairs(model, cl, cr), "labels": labels,
                "missed": missed, "blocking": self._blocking_figures(cl, cr, lrows, rrows, true_keys),
                "lrows": lrows, "rrows": rrows}

    def _blocking_figures(self, cl, cr, lrows, rrows, true_keys) -> dict[str, float]:
        d = self.data
        keys = pair_keys(cl, cr, len(d.right_table))
        return {"pair_completeness": pair_completeness(keys, true_keys),
                "reduction_ratio": reduction_ratio(int(keys.size), lrows.shape[0],
                                                   None if d.dedup else rrows.shape[0]),
                "num_candidates": float(keys.size)}

    def evaluate(self, model, split: str) -> dict[str, float]:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' (got {split!r})")
        was = model.training
        model.eval()
        try:
            self.scorer = self.default_scorer
            valid = self._split_scores(model, "valid")
            self.threshold, metrics = best_threshold(valid["scores"], valid["labels"], valid["missed"])
            choice = self._choose_scorer(model, valid, metrics)
            res, matches = valid, {}
            if split == "test":
                res = self._split_scores(model, "test")
                metrics = classify(res["scores"], res["labels"], self.threshold, res["missed"])
                matches = self._test_matches(model, res)  # in eval mode too: no dropout in the matches
            out = {**metrics, "threshold": float(self.threshold), **choice, **res.get("blocking", {}), **matches}
        finally:
            model.train(was)
        return {k: float(v) for k, v in out.items()}

    def _choose_scorer(self, model, valid: dict[str, Any], metrics: dict[str, float]) -> dict[str, float]:
        """With ``rerank.cosine_fallback`` / ``rerank.tfidf_fallback``: score by the record cosine / the best
        whole-record TF-IDF cosine when its max-F1 on valid beats the classifier's (ties keep the classifier; the
        cosine is tried first). Then ``scorer``, ``threshold``, ``valid['scores']`` and ``metrics`` (updated in
        place) are the chosen one's. Returns the F1s and the choice, for the metrics."""
        r = self.model_cfg.rerank
        if self.scorer != "classifier" or r is None or not (r.cosine_fallback or r.tfidf_fallback):
            return {}
        report = {"valid_f1_classifier": metrics["f1"]}
        options = [("cosine", "cosine")] if r.cosine_fallback else []
        if r.tfidf_fallback:
            options += [("tfidf", f"tfidf_{a}_record") for a in dict.fromkeys(r.tfidf)]
        chosen = None
        for scorer, name in options:
            scores = self.score_pairs(model, valid["left"], valid["right"], scorer=scorer, feature=name)
            threshold, by = best_threshold(scores, valid["labels"], valid["missed"])
            report[f"valid_f1_{name}"] = by["f1"]
            if by["f1"] > metrics["f1"]:
                self.scorer, self.threshold, valid["scores"], chosen = scorer, threshold, scores, name
                metrics.update(by)
        self.fallback_feature = chosen if self.scorer == "tfidf" else None
        return {**report, "scored_by_cosine": float(self.scorer == "cosine"),
                "scored_by_tfidf": float(self.scorer == "tfidf")}

    def _test_matches(self, model, res: dict[str, Any]) -> dict[str, float]:
        """Keep the test matches (for log_artifacts) and score their clustering where entities are known."""
        d = self.data
        if "candidates" in res:  # full tables of a pairs dataset: link the tables
            cl, cr = res["candidates"]
            scores = self.score_pairs(model, cl, cr)
        else:
            cl, cr, scores = res["left"], res["right"], res["scores"]
        keep = scores >= self.threshold
        cl, cr, scores = cl[keep], cr[keep], scores[keep]
        n_left = len(d.left)
        a, b = cl, cr if d.dedup else cr + n_left
        nodes = n_left if d.dedup else n_left + len(d.right)
        comp = connected_components(nodes, a, b)
        self._test_output = {"left": cl, "right": cr, "score": scores, "cluster": comp[a]}
        out: dict[str, float] = {"num_matches": float(cl.shape[0])}
        if d.protocol == "links" and d.left.entity is not None:
            lrows, rrows = res["lrows"], res["rrows"]
            members = lrows if d.dedup else np.concatenate([lrows, rrows + n_left])
            truth = d.left.entity[lrows] if d.dedup else np.concatenate([d.left.entity[lrows],
                                                                         d.right.entity[rrows]])
            c = cluster_prf(comp[members], truth)
            out.update({f"cluster_{k}": v for k, v in c.items()})
        return out
