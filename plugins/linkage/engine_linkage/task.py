"""The ``linkage`` task: record linkage / deduplication with a contrastive bi-encoder, blocking, re-ranking, clustering.

Model: each field is encoded by the encoder of its modality (``model.encoders``: ``char_ngram`` for text by default,
``categorical``, ``numeric``, ``sentence`` for pretrained MiniLM, ``image`` for image files; ``date`` fields use the
text encoder unless one is named), the fields are fused into one unit-norm record vector (``model.fusion``), and left
and right records share the encoder. Training minimises a contrastive objective from the registry over matching
pairs (default ``infonce`` with ``symmetric: true``: CLIPPINGS' symmetric InfoNCE, the other pairs of the batch as
negatives), with ``model.intra_modal`` the same objective on each field's own vectors (:mod:`.intra_modal`), plus,
with ``model.rerank``, the binary cross-entropy of a pair classifier over field similarities, on the labelled pairs
and on hard negatives mined from the blocking index (``model.rerank.hard_negatives`` per record, re-mined every
epoch). With ``model.cross_encoder`` a pretrained transformer, fine-tuned on the same pairs with its own optimiser
(:mod:`engine_linkage.cross_encoder`), scores the pairs instead (Ditto's retrieve-then-rerank).

Evaluation (the threshold is always chosen on ``valid`` by maximal F1, with the weights being evaluated, and applied
unchanged on ``test``; it is kept on the task as ``threshold``; with ``rerank.cosine_fallback`` the record cosine
scores instead of the classifier when its max-F1 on valid is higher, kept as ``scorer`` and followed by the export):

* pairs protocol (DeepMatcher / Magellan): classify the split's given pairs; ``f1``, ``precision``, ``recall`` of the
  match class. With the full tables, blocking runs on them too: ``pair_completeness`` (of the split's matches) and
  ``reduction_ratio`` for ``model.blocking_k`` neighbours per left record.
* links protocol (FEBRL): block among the split's records, classify the candidates; a true link that blocking missed
  is a false negative. Also the connected components of the matches as entities: ``cluster_f1`` (pairwise).

Outputs: the matched pairs of the test linkage with scores and cluster ids as parquet (``model.matches_out``, and
as a tracking artifact), and the record encoder as ONNX with a parity check.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.components import ObjectiveOutput, require_pair_objective
from engine.distributed import ShardedBatch, local_view
from engine.errors import ConfigError
from engine.fields import build_field_encoders, featurize_fields
from engine.task import Task

from .config import LinkageModelConfig, RerankConfig
from .cross_task import CrossEncoderHooks
from .evaluation import LinkageEvaluation
from .intra_modal import intra_modal_loss, intra_slots
from .metrics import pair_keys
from .model import PairClassifier, PairJaccard, RecordEncoder
from .outputs import LinkageOutputs
from .pair_task import PairFeatureHooks
from .records import LinkageData
from .tabular import CategoricalEncoder

__all__ = ["LinkageTask", "LinkageModelConfig", "RerankConfig"]

#: what evaluate("valid") reports, hence what train.monitor may name
VALID_METRICS = ("f1", "precision", "recall")
RECORD_FIELD = "_record"


class LinkageTask(CrossEncoderHooks, PairFeatureHooks, LinkageEvaluation, LinkageOutputs, Task):
    """Record linkage and deduplication: contrastive bi-encoder, ANN blocking, re-ranking, clustering."""

    name = "linkage"
    ModelConfig = LinkageModelConfig

    # -- data -----------------------------------------------------------------------------------------------------
    def load_data(self) -> None:
        monitor = self.config.train.monitor
        if not monitor.startswith("loss") and monitor not in VALID_METRICS:
            raise ConfigError(f"train.monitor: {monitor!r} is not a linkage validation metric; use one of "
                              f"{', '.join(VALID_METRICS)} (f1 is the protocol's) or a loss")
        data = self.config.data.build(self.registry).load()
        if not isinstance(data, LinkageData):
            raise ConfigError(f"data.source: {self.config.data.name!r} gives {type(data).__name__}, but task "
                              "'linkage' needs records (sources: record_tables, deepmatcher_csv, ditto_txt, febrl)")
        self.data = data
        if data.inferred is not None:  # data.fields omitted or auto: say what was inferred (also in the run's config)
            print(f"engine: data.fields inferred: {data.inferred.describe()}", file=sys.stderr, flush=True)
        self.model_cfg: LinkageModelConfig = self.config.model
        self.threshold: float | None = None
        #: what scores pairs, as the last evaluation chose (see ``score_pairs``, ``rerank.cosine_fallback``)
        self.scorer = self.default_scorer
        #: with ``scorer == "tfidf"``: the pair feature that scores (``tfidf_<analyser>_record``)
        self.fallback_feature: str | None = None
        self.mined: tuple[np.ndarray, np.ndarray] | None = None
        self._epoch = 1
        self._test_output: dict[str, np.ndarray] | None = None

    def data_summary(self) -> dict[str, Any]:
        return self.data.summary()

    def resolved_config(self) -> dict[str, Any]:
        """The pipeline with ``data.fields`` the schema the run used (as inferred when it was omitted or ``auto``)."""
        raw = self.config.raw
        raw.setdefault("data", {})["fields"] = dict(self.data.fields)
        return raw

    # -- model ----------------------------------------------------------------------------------------------------
    def fields(self) -> dict[str, str]:
        """The schema's fields, plus ``_record`` (text) with ``model.whole_record``."""
        extra = {RECORD_FIELD: "text"} if self.model_cfg.whole_record else {}
        return {**self.data.fields, **extra}

    def values(self, table, field: str) -> list[str | None]:
        if field != RECORD_FIELD:
            return table.values(field)
        cols = [table.values(f) for f in self.data.fields]
        return [" ".join(v for v in row if v) or None for row in zip(*cols)]

    def build_model(self) -> torch.nn.Module:
        m, d = self.model_cfg, self.data
        fields = self.fields()
        encoders = build_field_encoders(self.registry, fields, m.encoders, m.dim)
        n_left = len(d.left)
        columns = {f: self.values(d.left, f) + ([] if d.dedup else self.values(d.right, f)) for f in fields}
        feats = featurize_fields(fields, columns, encoders, m.encoders)
        for key, enc in encoders.items():  # values an encoder could not read (image files): data_summary reports them
            d.skipped.update({f"{key}_{cause}": n for cause, n in getattr(enc, "skipped", {}).items()})
        self.slots = slots = feats.slots
        left = feats.rows(0, n_left)
        self.features = {"left": left, "right": left if d.dedup else feats.rows(n_left, n_left + len(d.right))}
        model = torch.nn.Module()
        model.encoder = RecordEncoder(slots, encoders, m.dim, m.fusion)
        model.contrast = require_pair_objective(m.objective.build(self.registry), "model.objective")
        self.jaccard_slots = [s for s in slots if s.kind == "ids" and not isinstance(encoders[s.encoder],
                                                                                     CategoricalEncoder)]
        self._pair_jaccard: PairJaccard | None = None
        self.intra_slots = intra_slots(slots, m.intra_modal)
        num_pair_features = self.build_pair_features()
        if m.rerank is not None:
            model.classifier = PairClassifier(len(slots), m.dim, len(self.jaccard_slots) if m.rerank.jaccard else 0,
                                              m.rerank.hidden, m.rerank.vector_features, num_pair_features,
                                              m.rerank.learned_features)
        if m.cross_encoder is not None:
            self.build_cross_encoder(model)
        return model

    # -- training -------------------------------------------------------------------------------------------------
    def _train_positives(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.data.pairs["train"].positives()
        return p.left, p.right

    def _classifier_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.data.pairs["train"]
        li, ri, y = p.left, p.right, p.label
        if self.mined is not None:
            li, ri = np.concatenate([li, self.mined[0]]), np.concatenate([ri, self.mined[1]])
            y = np.concatenate([y, np.zeros(self.mined[0].shape[0], np.int64)])
        return li, ri, y

    @property
    def _mined_per_record(self) -> int:
        """Hard negatives mined per train record each epoch: the larger of the classifier's and the cross-encoder's."""
        m = self.model_cfg
        return max(m.rerank.hard_negatives if m.rerank else 0, m.cross_encoder.hard_negatives if m.cross_encoder else 0)

    def on_epoch_start(self, model, epoch: int, generator: torch.Generator) -> None:
        self._epoch = epoch
        k = self._mined_per_record
        if k == 0:
            return
        d = self.data
        if d.protocol == "links":
            lrows, rrows = d.split_records("train")
        else:
            tr = d.pairs["train"]
            lrows, rrows = np.unique(tr.left), np.unique(tr.right)
            if d.dedup:
                lrows = rrows = np.unique(np.concatenate([lrows, rrows]))
        was = model.training
        model.eval()
        with torch.no_grad():
            ul = self._record_vectors(model, "left", lrows)
            ur = ul if d.dedup else self._record_vectors(model, "right", rrows)
        model.train(was)
        li, ri = self.block(ul, ur, lrows, rrows, k)
        li, ri = lrows[li], rrows[ri]
        tr = d.pairs["train"]
        n_right = len(d.right_table)
        known = pair_keys(tr.left, tr.right, n_right)
        keep = ~np.isin(pair_keys(li, ri, n_right), known)
        self.mined = (li[keep], ri[keep])

    def num_batches(self) -> int:
        b = self.config.train.batch_size
        return max(1, (self._train_positives()[0].shape[0] + b - 1) // b)

    def train_batches(self, epoch: int, generator: torch.Generator):
        pl_, pr_ = self._train_positives()
        order = torch.randperm(pl_.shape[0], generator=generator).numpy()
        nb = self.num_batches()
        clf = None
        if self.model_cfg.rerank is not None or self.model_cfg.cross_encoder is not None:
            cl, cr, cy = self._classifier_pairs()
            corder = torch.randperm(cl.shape[0], generator=generator).numpy()
            chunks = np.array_split(corder, nb)
            clf = [(cl[c], cr[c], cy[c]) for c in chunks]
        for i, idx in enumerate(np.array_split(order, nb)):  # near-equal batches: never a lone last pair
            yield (pl_[idx], pr_[idx], None if clf is None else clf[i])

    def _inputs(self, side: str, rows, device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, vals = self.features[side]
        rows = torch.as_tensor(rows, dtype=torch.long)
        return ids[rows].to(device), vals[rows].to(device)

    def _jaccard(self, lrows, rrows, device) -> torch.Tensor | None:
        """n-gram Jaccard similarity of each id field of the pairs, ``[B, F_ids]`` (cached: :class:`PairJaccard`)."""
        if self.model_cfg.rerank is None or not self.model_cfg.rerank.jaccard or not self.jaccard_slots:
            return None
        if self._pair_jaccard is None:
            self._pair_jaccard = PairJaccard(self.features["left"][0], self.features["right"][0], self.jaccard_slots)
        return self._pair_jaccard(lrows, rrows).to(device)

    def _pair_logits(self, model, lrows, rrows, device,
                     encoder_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier logits of pairs, and the record vectors of both sides; ``encoder_grad=False`` builds no graph
        through the encoder (an update that steps only the classifier)."""
        enc = model.encoder
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            fl, ml = enc.field_vectors(*self._inputs("left", lrows, device))
            fr, mr = enc.field_vectors(*self._inputs("right", rrows, device))
            u, v = enc.fuse(fl, ml), enc.fuse(fr, mr)
        return model.classifier(fl, ml, fr, mr, u, v, self._jaccard(lrows, rrows, device),
                                self._pair_features(lrows, rrows, device)), u, v

    def shard_batch(self, batch, shard) -> ShardedBatch:
        """Data-parallel: each rank keeps its rows of the batch's matched pairs (the objective gathers the other
        ranks' as negatives) and of its classifier pairs (a mean over the global batch's)."""
        pl_, pr_, clf = batch
        n = pl_.shape[0]
        part = shard.for_rows(n)
        totals = {"rows": n, "pairs": 0 if clf is None else clf[0].shape[0]}
        if clf is not None:
            start, stop = part.bounds(totals["pairs"])
            clf = tuple(c[start:stop] for c in clf)
        return ShardedBatch((part.take(pl_), part.take(pr_), clf), part, totals)

    def check_data_parallel(self, model) -> None:
        super().check_data_parallel(model)
        m = self.model_cfg
        for key, value in (("model.intra_modal", m.intra_modal), ("model.cross_encoder", m.cross_encoder),
                           ("model.rerank.lr", m.rerank.lr if m.rerank is not None else None)):
            if value is not None:
                raise ConfigError(f"--nproc: {key} does not train data-parallel yet; use --nproc 1")

    @property
    def _own_classifier_steps(self) -> bool:
        """``rerank.lr`` set: the pair classifier has its own optimiser and steps (:meth:`training_steps`)."""
        r = self.model_cfg.rerank
        return r is not None and r.lr is not None

    def parameter_groups(self, model) -> dict[str, dict[str, Any]]:
        """With ``rerank.lr``, the pair classifier has its own optimiser (``rerank``) at that learning rate."""
        groups = super().parameter_groups(model)
        if not self._own_classifier_steps:
            return groups
        own = {id(p) for p in model.classifier.parameters()}
        groups["model"] = {**groups["model"], "params": [p for p in groups["model"]["params"] if id(p) not in own]}
        return {**groups, "rerank": {"params": list(model.classifier.parameters()), "lr": self.model_cfg.rerank.lr}}

    def training_steps(self, model, batch):
        """The bi-encoder's update (and the cross-encoder's, see :class:`CrossEncoderHooks`); with ``rerank.lr``
        then one classifier update per ``rerank.batch_size`` of the batch's labelled pairs."""
        yield from super().training_steps(model, batch)
        clf = batch[2]
        if not self._own_classifier_steps or clf is None:
            return
        device = next(model.parameters()).device
        size = self.model_cfg.rerank.batch_size
        for start in range(0, clf[0].shape[0], size):
            li, ri, y = (a[start:start + size] for a in clf)
            logits, _, _ = self._pair_logits(model, li, ri, device, encoder_grad=False)  # only the classifier steps
            bce = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(y, dtype=logits.dtype, device=device))
            yield "rerank", ObjectiveOutput(bce, {"bce": bce})

    def training_step(self, model, batch) -> ObjectiveOutput:
        device = next(model.parameters()).device
        batch, share, totals = local_view(batch, "pairs")  # share: of the mean over the global classifier pairs
        n = batch[0].shape[0] if totals is None else totals["rows"]  # matched pairs of the global batch
        pl_, pr_, clf = batch
        m = self.model_cfg
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=device)
        if n >= 2 and (m.objective.weight > 0 or m.intra_modal is not None):
            enc = model.encoder
            fl, ml = enc.field_vectors(*self._inputs("left", pl_, device))
            fr, mr = enc.field_vectors(*self._inputs("right", pr_, device))
            if m.objective.weight > 0:
                parts["contrast"] = model.contrast(enc.fuse(fl, ml), enc.fuse(fr, mr)).loss
                total = total + m.objective.weight * parts["contrast"]
            im = None if m.intra_modal is None else intra_modal_loss(model.contrast, fl, ml, fr, mr, self.intra_slots)
            if im is not None:
                parts["intra_modal"] = im
                total = total + m.intra_modal.weight * im
        if m.rerank is not None and m.rerank.lr is None and clf is not None and clf[0].shape[0] > 0:
            logits, _, _ = self._pair_logits(model, clf[0], clf[1], device)
            bce = share(F.binary_cross_entropy_with_logits(logits, torch.as_tensor(clf[2], dtype=logits.dtype,
                                                                                   device=device)), clf[0].shape[0])
            parts["rerank"] = bce
            total = total + m.rerank.weight * bce
        return ObjectiveOutput(total, parts)

    # -- scoring --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _record_vectors(self, model, side: str, rows: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        bs = self.model_cfg.eval_batch_size
        out = [model.encoder(*self._inputs(side, rows[i:i + bs], device)).float().cpu()
               for i in range(0, rows.shape[0], bs)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.model_cfg.dim), np.float32)

    @property
    def default_scorer(self) -> str:
        """What scores pairs before ``rerank.cosine_fallback`` has a say: ``cross``, ``classifier`` or ``cosine``."""
        m = self.model_cfg
        return "cross" if m.cross_encoder is not None else "classifier" if m.rerank is not None else "cosine"

    @torch.no_grad()
    def score_pairs(self, model, lrows: np.ndarray, rrows: np.ndarray, scorer: str | None = None,
                    feature: str | None = None) -> np.ndarray:
        """Match scores of pairs (row indices into the left and right tables) by ``scorer`` (default: the one the
        last evaluation chose, see :attr:`scorer`): the cross-encoder's probability (``cross``), the classifier's
        (``classifier``), the cosine of the record vectors (``cosine``), or an untrained TF-IDF cosine (``tfidf``:
        the pair feature ``feature``, default the one ``rerank.tfidf_fallback`` chose)."""
        device = next(model.parameters()).device
        scorer = scorer or self.scorer
        if scorer == "tfidf":
            return self.tfidf_features.cosine(feature or self.fallback_feature, lrows, rrows)
        if scorer == "cosine":  # each distinct record encoded once, not once per pair it is in
            lu, li = np.unique(lrows, return_inverse=True)
            ru, ri = np.unique(rrows, return_inverse=True)
            u = torch.from_numpy(self._record_vectors(model, "left", lu))[torch.as_tensor(li, dtype=torch.long)]
            v = torch.from_numpy(self._record_vectors(model, "right", ru))[torch.as_tensor(ri, dtype=torch.long)]
            return (u * v).sum(-1).numpy().astype(np.float64)
        ce = self.model_cfg.cross_encoder
        bs = self.model_cfg.eval_batch_size if ce is None else 4 * ce.batch_size
        out = []
        for i in range(0, lrows.shape[0], bs):
            a, b = lrows[i:i + bs], rrows[i:i + bs]
            if scorer == "cross":
                out.append(torch.sigmoid(self._cross_logits(model, a, b)).float().cpu())
            else:
                out.append(torch.sigmoid(self._pair_logits(model, a, b, device)[0]).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    # -- outputs (write_matches, log_artifacts: LinkageOutputs) ---------------------------------------------------
    def export_onnx(self, model, directory: str) -> dict[str, Any]:
        """``record_encoder.onnx``: ``ids int64 [batch, W_ids]`` and/or ``values float32 [batch, W_values]`` (the
        featurised record, see ``record_schema.json``) -> ``record_vector float32 [batch, dim]`` (unit norm)."""
        from .export import export_linkage_model

        return export_linkage_model(self, model, directory)
