"""Untrained TF-IDF similarity of records: the baseline a trained matcher must beat, a blocking index and pair
features.

A record's text is its field values joined by a space (missing values left out), lower-cased. Two analysers:

* ``word``: tokens ``\\b\\w+\\b`` (single characters kept: sizes, versions), unigrams;
* ``char``: character 3-grams inside words, each word padded with a space on both sides (scikit-learn's
  ``char_wb``: ``"ab cd"`` -> ``" ab"``, ``"ab "``, ``" cd"``, ``"cd "``).

Weights are scikit-learn's ``TfidfVectorizer`` defaults: raw term count times the smoothed idf
:math:`\\mathrm{idf}(t) = \\ln\\frac{1 + n}{1 + \\mathrm{df}(t)} + 1`, each row L2-normalised, so the similarity of
two records is the dot product of their rows (their cosine). The idf is fitted on a corpus of records without labels
(the task fits it on both record tables); terms outside it are ignored. An empty text is the zero vector (cosine 0).

Reference: Salton & Buckley, "Term-weighting approaches in automatic text retrieval" (1988); as an entity-matching
baseline, Mudgal et al., DeepMatcher (SIGMOD 2018) and Konda et al., Magellan (VLDB 2016).
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

__all__ = ["ANALYZERS", "TfidfSimilarity", "record_texts", "pair_cosine", "TfidfPairFeatures"]

Analyzer = Literal["word", "char"]
#: the TfidfVectorizer settings of each analyser (see the module docstring)
ANALYZERS: dict[str, dict] = {"word": {"analyzer": "word", "token_pattern": r"(?u)\b\w+\b", "ngram_range": (1, 1)},
                              "char": {"analyzer": "char_wb", "ngram_range": (3, 3)}}


def record_texts(columns: Mapping[str, Sequence[str | None]], fields: Sequence[str] | None = None) -> list[str]:
    """One text per record: the values of ``fields`` (default: every column, in order) joined by a space."""
    names = list(fields) if fields is not None else list(columns)
    n = len(columns[names[0]]) if names else 0
    return [" ".join(str(columns[f][i]) for f in names if columns[f][i] not in (None, "")) for i in range(n)]


class TfidfSimilarity:
    """TF-IDF vectors of texts (L2-normalised rows of a ``scipy.sparse`` CSR matrix), fitted on a corpus.

    Args:
        analyzer: ``"word"`` or ``"char"`` (see the module docstring).
    """

    def __init__(self, analyzer: Analyzer = "word") -> None:
        if analyzer not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {', '.join(ANALYZERS)} (got {analyzer!r})")
        self.analyzer = analyzer
        self.vectorizer = None

    def fit(self, texts: Sequence[str]) -> "TfidfSimilarity":
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(lowercase=True, dtype=np.float64, **ANALYZERS[self.analyzer])
        corpus = [t for t in texts if t]
        try:
            self.vectorizer.fit(corpus or ["_"])
        except ValueError:  # every text empty after analysis (e.g. one character per record, char 3-grams)
            self.vectorizer.fit(["___"])
        return self

    def transform(self, texts: Sequence[str]):
        if self.vectorizer is None:
            raise RuntimeError("TfidfSimilarity: call fit() first")
        return self.vectorizer.transform(list(texts)).tocsr()

    def state(self) -> dict:
        """What :meth:`from_state` rebuilds the fitted similarity from (JSON-ready): the analyser, the vocabulary
        (term -> column) and the idf of each column."""
        if self.vectorizer is None:
            raise RuntimeError("TfidfSimilarity: call fit() first")
        vocab = self.vectorizer.vocabulary_
        return {"analyzer": self.analyzer, "vocabulary": {t: int(i) for t, i in vocab.items()},
                "idf": [float(x) for x in self.vectorizer.idf_]}

    @classmethod
    def from_state(cls, state: Mapping) -> "TfidfSimilarity":
        """The similarity :meth:`state` describes, fitted (its transform equals the original's)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        sim = cls(state["analyzer"])
        vocab = {str(t): int(i) for t, i in state["vocabulary"].items()}
        if len(state["idf"]) != len(vocab):
            raise ValueError(f"TF-IDF state: {len(vocab)} terms but {len(state['idf'])} idf values")
        sim.vectorizer = TfidfVectorizer(lowercase=True, dtype=np.float64, vocabulary=vocab,
                                         **ANALYZERS[sim.analyzer])
        sim.vectorizer.idf_ = np.asarray(state["idf"], dtype=np.float64)
        return sim

    def __repr__(self) -> str:
        size = 0 if self.vectorizer is None else len(self.vectorizer.vocabulary_)
        return f"TfidfSimilarity(analyzer={self.analyzer!r}, vocabulary={size})"


def pair_cosine(left, right, li: np.ndarray, ri: np.ndarray) -> np.ndarray:
    """Cosine of rows ``left[li[k]]`` and ``right[ri[k]]`` of two row-normalised sparse matrices, ``float64 [B]``."""
    li, ri = np.asarray(li, dtype=np.int64), np.asarray(ri, dtype=np.int64)
    if li.size == 0:
        return np.zeros(0)
    return np.asarray(left[li].multiply(right[ri]).sum(axis=1), dtype=np.float64).ravel()


class TfidfPairFeatures:
    """TF-IDF cosines of pairs of records, ``float32 [B, F]``: for each scope (the whole record, then each field of
    ``per_field``) and each analyser, the cosine of the two records' texts in that scope.

    Each scope's idf is fitted on the texts of both tables (one table when ``right`` is None: deduplication).

    Args:
        left, right: ``{field: values}`` of the two tables (``right`` None: the left table on both sides).
        fields: the fields joined into the whole-record text, in order.
        analyzers: e.g. ``("word", "char")``.
        per_field: fields that also get a cosine of their own (e.g. the text fields).
    """

    def __init__(self, left: Mapping[str, Sequence[str | None]], right: Mapping[str, Sequence[str | None]] | None,
                 fields: Sequence[str], analyzers: Sequence[Analyzer] = ("word", "char"),
                 per_field: Sequence[str] = ()) -> None:
        self.fields, self.analyzers, self.per_field = list(fields), list(analyzers), list(per_field)
        self.names: list[str] = []
        self.matrices: list[tuple[object, object]] = []
        self.similarities: list[TfidfSimilarity] = []
        for scope, names in self._scopes():
            lt = record_texts(left, names)
            rt = lt if right is None else record_texts(right, names)
            for a in self.analyzers:
                sim = TfidfSimilarity(a).fit(lt + ([] if right is None else rt))
                lm = sim.transform(lt)
                self.matrices.append((lm, lm if right is None else sim.transform(rt)))
                self.similarities.append(sim)
                self.names.append(f"tfidf_{a}_{scope}")

    def _scopes(self) -> list[tuple[str, list[str]]]:
        return [("record", self.fields)] + [(f, [f]) for f in self.per_field]

    def _texts(self, columns: Mapping[str, Sequence[str | None]]) -> list[list[str]]:
        """The texts of each feature's scope, one list per feature (in :attr:`names` order)."""
        out = []
        for _, names in self._scopes():
            texts = record_texts(columns, names)
            out += [texts] * len(self.analyzers)
        return out

    def state(self) -> dict:
        """What :meth:`from_state` rebuilds the features from, without the tables (JSON-ready)."""
        return {"fields": self.fields, "analyzers": self.analyzers, "per_field": self.per_field,
                "similarities": [s.state() for s in self.similarities]}

    @classmethod
    def from_state(cls, state: Mapping, table: Mapping[str, Sequence[str | None]]) -> "TfidfPairFeatures":
        """The fitted features of :meth:`state` over ``table`` (``{field: values}``) on both sides: pairs within
        it, or, after :meth:`with_left`, new records against it (serving)."""
        self = object.__new__(cls)
        self.fields, self.analyzers = list(state["fields"]), list(state["analyzers"])
        self.per_field = list(state["per_field"])
        self.similarities = [TfidfSimilarity.from_state(s) for s in state["similarities"]]
        self.names = [f"tfidf_{a}_{scope}" for scope, _ in self._scopes() for a in self.analyzers]
        if len(self.names) != len(self.similarities):
            raise ValueError(f"TF-IDF state: {len(self.similarities)} similarities for features {self.names}")
        mats = [sim.transform(texts) for sim, texts in zip(self.similarities, self._texts(table))]
        self.matrices = [(m, m) for m in mats]
        return self

    def with_left(self, left: Mapping[str, Sequence[str | None]]) -> "TfidfPairFeatures":
        """The same fitted features with new left records (``{field: values}``) against this right table."""
        other = object.__new__(TfidfPairFeatures)
        other.__dict__.update(self.__dict__)
        other.matrices = [(sim.transform(texts), rm) for sim, texts, (_, rm)
                          in zip(self.similarities, self._texts(left), self.matrices)]
        return other

    @property
    def width(self) -> int:
        return len(self.names)

    def matrix(self, name: str):
        """``(left, right)`` TF-IDF matrices of feature ``name`` (e.g. ``tfidf_char_record``)."""
        return self.matrices[self.names.index(name)]

    def cosine(self, name: str, lrows, rrows) -> np.ndarray:
        """Feature ``name`` alone for the pairs ``(lrows[k], rrows[k])``, ``float64 [B]`` (a column of ``__call__``)."""
        lm, rm = self.matrix(name)
        return pair_cosine(lm, rm, lrows, rrows)

    def __call__(self, lrows, rrows) -> np.ndarray:
        lrows, rrows = np.asarray(lrows, dtype=np.int64), np.asarray(rrows, dtype=np.int64)
        cols = [pair_cosine(lm, rm, lrows, rrows) for lm, rm in self.matrices]
        return np.stack(cols, 1).astype(np.float32) if cols else np.zeros((lrows.size, 0), np.float32)
