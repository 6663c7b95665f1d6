"""The ``seqrec`` task: next-item prediction on item sequences, with an optional contrastive term, composed in YAML.

A model is a sequence encoder (``sasrec``, ``gru4rec``), a next-item loss (``ce``, ``bce``, ``bpr``; see
:mod:`engine_seqrec.losses`) and an optional contrastive term (any objective from the registry, ``infonce`` by
default, weight λ) between two views of each training sequence:

* ``views: augment`` — CL4SRec: two augmented views (each from an augmenter drawn per sequence from ``augmenters``).
* ``views: dropout`` — DuoRec's unsupervised view: the same batch encoded twice, with different dropout masks.
* ``views: supervised`` — DuoRec's supervised view: another training sequence with the same next item (dropout view
  when there is none). The anchor is the main pass's representation.
* ``views: augment`` with ``learned:`` — MCLRec: two learnable augmenters map the two augmented views'
  representations to two more views (see :mod:`engine_seqrec.mclrec`); with ``learned.meta`` each batch makes three
  updates, as MCLRec's meta-optimisation: the encoder (augmenters fixed), the augmenters alone on the learned-view
  loss (encoder fixed), the encoder again.

Evaluation is leave-one-out, ranking against ALL items (no sampled negatives): the history (training prefix for
``valid``; plus the validation item for ``test``, truncated to ``max_len``) is encoded and scored against every item.
The padding id is never a candidate; with ``mask_history`` (default, as ICLRec's and MCLRec's code) neither are the
history's items. RecBole masks nothing but padding: set ``mask_history: false`` to compare with RecBole numbers.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Iterator, NamedTuple

import polars as pl
import torch

from engine.components import ObjectiveOutput, require_pair_objective
from engine.distributed import ShardedBatch, local_view, slice_rows
from engine.errors import ConfigError, DataError
from engine.evaluate import ItemSets, full_ranking
from engine.evaluate.cold import cold_warm_ranking
from engine.task import Task

from .config import ContrastConfig, LearnedViewsConfig, SeqRecModelConfig
from .content import SeqContent, load_sequence_content
from .data import SequenceData
from .bucketing import by_length
from .examples import SeqBatch, TrainingExamples
from .losses import LOSSES, CrossEntropyLoss, sample_negatives
from .mclrec import learned_view_loss
from .views import SameTargetIndex, augmented_views

__all__ = ["SeqRecTask", "SeqRecModelConfig", "ContrastConfig", "LearnedViewsConfig"]


class Tower(NamedTuple):
    """The encoder's calls with the item content bound in (see :meth:`SeqRecTask._tower`)."""

    forward: Any  #: seqs [B, L] -> hidden [B, L, D]
    encode: Any  #: seqs [B, L] -> [B, D]
    table: torch.Tensor  #: [num_items + 1, D], the tower's item table (training)
    serving_table: torch.Tensor  #: [num_items + 1, D], cold items from content (ranking)
    parts: Any  #: the content's (shared, specific), or None
    item_input: torch.Tensor | None = None


class SeqRecTask(Task):
    """Sequential recommendation (SASRec, GRU4Rec, CL4SRec, DuoRec, MCLRec), leave-one-out, full ranking."""

    name = "seqrec"
    ModelConfig = SeqRecModelConfig

    # -- data -----------------------------------------------------------------------------------------------------
    def load_data(self) -> None:
        data = self.config.data.build(self.registry).load()
        if not isinstance(data, SequenceData):
            raise ConfigError(f"data.source: {self.config.data.name!r} gives {type(data).__name__}, but task "
                              "'seqrec' needs item sequences (sources: s3rec_txt, interaction_sequences)")
        self.data, self.item_features, self.cold, self.warm = load_sequence_content(self.config.data, data)
        data = self.data
        self.model_cfg: SeqRecModelConfig = self.config.model
        m = self.model_cfg
        if m.content is not None and self.item_features is None:
            raise ConfigError("model.content: needs data.item_features (the item feature table)")
        if self.cold is not None and m.loss != "ce":
            raise ConfigError(f"model.loss: {m.loss!r} samples negatives from every item, cold ones included; "
                              "use ce with data.cold_items (cold items are left out of its softmax)")
        self.examples = TrainingExamples(data, m.prefix_augmentation)
        if len(self.examples) == 0:
            raise DataError(f"{self.config.data.options.get('path')}: no training example (every training prefix "
                            "has a single item; sequences need >= 4 items to train on)")
        if m.loss != "ce" and data.num_items < 2:
            raise DataError(f"loss {m.loss!r} samples negatives and needs >= 2 items (got {data.num_items})")
        self.same_target = None
        if m.contrast is not None and m.contrast.views == "supervised":
            self.same_target = SameTargetIndex(data)

    def data_summary(self) -> dict[str, Any]:
        out = {**self.data.summary(), "num_train_examples": len(self.examples)}
        if self.item_features is not None:
            out.update(self.item_features.summary())
        if self.cold is not None:
            out["cold_items"] = int(self.cold.test.size)
        return out

    # -- model ----------------------------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        m = self.model_cfg
        model = torch.nn.Module()
        model.encoder = m.encoder.build(self.registry, num_items=self.data.num_items, max_len=m.max_len)
        for method in ("encode", "item_embeddings"):
            if not callable(getattr(model.encoder, method, None)):
                raise ConfigError(f"model.encoder: {m.encoder.name!r} is not a sequence encoder (it has no "
                                  f"{method}()); use sasrec or gru4rec")
        model.loss = LOSSES[m.loss]() if self.cold is None else CrossEntropyLoss(exclude=~self.warm)
        self.content = None
        if m.content is not None:
            if m.content.input and "item_input" not in inspect.signature(model.encoder.encode).parameters:
                raise ConfigError(f"model.content.input: encoder {m.encoder.name!r} takes no item input; set "
                                  "model.content.input: false (content then scores items through its own view)")
            self.content = SeqContent.build(self.registry, m.content, self.item_features, self.warm,
                                            model.encoder.embedding_dim, model)
        self.augmenters: list[Any] = []
        if m.contrast is not None:
            model.contrast = require_pair_objective(m.contrast.objective.build(self.registry),
                                                    "model.contrast.objective")
            for i, spec in enumerate(m.contrast.augmenters):
                aug = spec.build(self.registry, num_items=self.data.num_items)
                if getattr(aug, "view_kind", None) != "sequence":
                    raise ConfigError(f"model.contrast.augmenters.{i}: {spec.name!r} is not a sequence augmenter "
                                      f"(view_kind {getattr(aug, 'view_kind', None)!r})")
                if callable(getattr(aug, "fit", None)):
                    aug.fit(self.data.train_sequences(), self.data.num_items)
                self.augmenters.append(aug)
            modules = [a for a in self.augmenters if isinstance(a, torch.nn.Module)]
            if modules:
                model.augmenters = torch.nn.ModuleList(modules)
            learned = m.contrast.learned
            if learned is not None:
                dim = model.encoder.embedding_dim
                views = [learned.augmenter.build(self.registry, dim=dim) for _ in range(2)]
                for view in views:
                    if getattr(view, "view_kind", None) != "representation" or not isinstance(view, torch.nn.Module):
                        raise ConfigError(f"model.contrast.learned.augmenter: {learned.augmenter.name!r} is not a "
                                          "learnable representation augmenter (use learned_mlp)")
                model.learned_views = torch.nn.ModuleList(views)
                model.learned_contrast = require_pair_objective(learned.objective.build(self.registry),
                                                                "model.contrast.learned.objective")
        return model

    @property
    def _meta_learned(self) -> LearnedViewsConfig | None:
        """MCLRec's learned views when they are meta-optimised (their own optimiser and update), else None."""
        learned = self.model_cfg.contrast.learned if self.model_cfg.contrast else None
        return learned if learned is not None and learned.meta else None

    def parameter_groups(self, model) -> dict[str, dict[str, Any]]:
        """MCLRec's meta-optimisation: the learned augmenters have their own optimiser; everything else is
        ``model``."""
        learned = self._meta_learned
        if learned is None:
            return super().parameter_groups(model)
        own = {id(p) for p in model.learned_views.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
        group = {"params": list(model.learned_views.parameters())}
        if learned.lr is not None:
            group["lr"] = learned.lr
        return {"model": {"params": rest}, "augmenter": group}

    def training_steps(self, model, batch) -> Iterator[tuple[str, ObjectiveOutput]]:
        yield "model", self.training_step(model, batch)
        if self._meta_learned is not None:
            yield "augmenter", self._augmenter_step(model, batch)
            yield "model", self.training_step(model, batch)

    # -- training -------------------------------------------------------------------------------------------------
    def num_batches(self) -> int:
        b = self.config.train.batch_size
        return (len(self.examples) + b - 1) // b

    def train_batches(self, epoch: int, generator: torch.Generator):
        m, ex = self.model_cfg, self.examples
        order = torch.randperm(len(ex), generator=generator)
        b = self.config.train.batch_size
        for start in range(0, order.numel(), b):
            idx = order[start : start + b]
            inputs, targets, lengths = ex.inputs(idx, m.max_len), ex.targets(idx, m.max_len), ex.lengths(idx, m.max_len)
            negatives = None
            if LOSSES[m.loss].needs_negatives:
                negatives = sample_negatives(targets, self.data.num_items, m.num_negatives, generator)
            yield SeqBatch(inputs, targets, lengths, negatives, self._views(idx, inputs, lengths, generator), idx)

    def _views(self, idx, inputs, lengths, generator) -> tuple[torch.Tensor, ...]:
        c = self.model_cfg.contrast
        if c is None or c.views == "dropout":
            return ()
        if c.views == "augment":
            v1, _, v2, _ = augmented_views(inputs, lengths, self.augmenters, generator)
            return v1, v2
        pick, found = self.same_target.sample(self.examples.ends[idx], generator)
        partners = self.same_target.sequences(pick, self.model_cfg.max_len)
        return (torch.where(found.unsqueeze(1), partners, inputs),)  # no partner: a dropout view of itself

    def shard_batch(self, batch: SeqBatch, shard) -> ShardedBatch:
        """Data-parallel: each rank keeps its rows (sequences, targets, negatives, views) of the global batch; the
        next-item loss is a mean over the global batch's trained positions, the contrast gathers every rank's
        views. Dropout draws differ from a single process's (each rank draws for its own rows): exact with
        dropout 0, statistically the same otherwise."""
        n = batch.inputs.shape[0]
        part = shard.for_rows(n)
        positions = n if self.model_cfg.train_positions == "last" else int((batch.targets > 0).sum())
        return ShardedBatch(slice_rows(batch, part.bounds(n), n), part, {"rows": n, "positions": positions})

    def check_data_parallel(self, model) -> None:
        super().check_data_parallel(model)
        m = self.model_cfg
        if m.content is not None:
            raise ConfigError("--nproc: model.content does not train data-parallel yet; use --nproc 1")
        if m.contrast is not None and m.contrast.learned is not None:
            raise ConfigError("--nproc: MCLRec's learned views (model.contrast.learned) do not train data-parallel "
                              "yet (their margin regulariser needs the global batch's hardest negatives); use "
                              "--nproc 1")

    def training_step(self, model, batch: SeqBatch) -> ObjectiveOutput:
        m = self.model_cfg
        device = next(model.parameters()).device
        batch, share, _ = local_view(batch, "positions")  # share: of the mean over the global batch's positions
        batch = batch.to(device)
        inputs, targets, neg = batch.inputs, batch.targets, batch.negatives
        tower = self._tower(model)
        hidden = by_length(tower.forward, inputs)  # exact, and several times cheaper than one padded pass
        table = tower.table
        if m.train_positions == "last":
            h, t = hidden[:, -1], targets[:, -1]
            neg = None if neg is None else neg[:, -1]
        else:
            where = targets > 0
            h, t = hidden[where], targets[where]
            neg = None if neg is None else neg[where]
        rec = model.loss(h, table, t, neg)
        parts = {f"rec/{k}": share(v, t.numel()) for k, v in rec.parts.items()}
        total = share(rec.loss, t.numel())
        if self.content is not None:
            for name, value in self.content.losses(model, h, t, table, tower.parts).items():
                parts[name] = value
                total = total + value
        if m.contrast is not None:
            a, p = self._view_pair(tower.encode, hidden[:, -1], inputs, batch.views)
            cl = model.contrast(a, p).loss
            parts["contrast"] = cl
            total = total + m.contrast.objective.weight * cl
            learned = m.contrast.learned
            if learned is not None:
                mcl = learned_view_loss(model.learned_contrast, a, p, *model.learned_views, learned.margin_weight)
                parts["learned_views"] = mcl
                total = total + learned.objective.weight * mcl
        return ObjectiveOutput(total, parts)

    def _augmenter_step(self, model, batch: SeqBatch) -> ObjectiveOutput:
        """MCLRec's second update: the learned-view loss alone, for the augmenters (the encoder is not stepped)."""
        device = next(model.parameters()).device
        views = tuple(v.to(device) for v in batch.views)
        with torch.no_grad():  # the augmenters' gradient does not need the encoder's graph
            encode = self._tower(model).encode
            h1, h2 = by_length(encode, views[0]), by_length(encode, views[1])
        learned = self.model_cfg.contrast.learned
        loss = learned_view_loss(model.learned_contrast, h1, h2, *model.learned_views, learned.margin_weight)
        return ObjectiveOutput(loss, {"learned_views": loss})

    def _view_pair(self, encode, anchor, inputs, views) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.model_cfg.contrast
        if c.views == "augment":
            return by_length(encode, views[0]), by_length(encode, views[1])
        if c.views == "dropout":
            return anchor, by_length(encode, inputs)
        return anchor, by_length(encode, views[0])

    # -- evaluation -----------------------------------------------------------------------------------------------
    def score_function(self, model, split: str):
        """``score(users [b]) -> [b, num_items + 1]``: the users' histories encoded, times every item (column 0 is
        the padding id). Call it under ``torch.no_grad()`` (:func:`full_ranking` does)."""
        device = next(model.parameters()).device
        histories = self.data.padded_history(split, self.model_cfg.max_len)
        tower = self._tower(model)
        table = tower.serving_table

        def score(users: torch.Tensor) -> torch.Tensor:
            return by_length(tower.encode, histories[users].to(device)) @ table.T

        return score

    def evaluate(self, model, split: str) -> dict[str, float]:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' (got {split!r})")
        d, ev = self.data, self.config.evaluate
        was_training = model.training
        model.eval()
        users = torch.arange(d.num_users)
        truth = ItemSets.from_pairs(users, d.target(split), d.num_users)
        if self.model_cfg.mask_history:
            indptr, items = d.history(split)
            seen = torch.repeat_interleave(users, indptr[1:] - indptr[:-1])
            exclude = ItemSets.from_pairs(torch.cat([users, seen]), torch.cat([torch.zeros_like(users), items]),
                                          d.num_users)
        else:
            exclude = ItemSets.from_pairs(users, torch.zeros_like(users), d.num_users)
        with torch.no_grad():
            score = self.score_function(model, split)
        if self.cold is not None:
            truth_frame = pl.DataFrame({"user": users.numpy(), "item": d.target(split).numpy()})
            rows, cols = exclude.coo(users)
            exclude_frame = pl.DataFrame({"user": rows.numpy(), "item": cols.numpy()})
            warm = torch.nonzero(self.warm).flatten().numpy()
            metrics = cold_warm_ranking(score, truth_frame, exclude_frame, d.num_users, d.num_items + 1,
                                        self.cold.test, warm, ev.ks, ev.metrics, ev.chunk_size)
        else:
            metrics = full_ranking(score, truth, exclude, ev.ks, ev.metrics, ev.chunk_size)
        model.train(was_training)
        return metrics

    def _tower(self, model) -> "Tower":
        """The encoder with the items' content (when ``model.content``) bound in, computed once."""
        encoder = model.encoder
        if self.content is None:
            table = encoder.item_embeddings()
            return Tower(encoder, encoder.encode, table, table, None)
        parts = model.content.parts()
        content = parts.total
        item_input = self.content.item_input(content)
        if item_input is None:
            forward, encode, table = encoder, encoder.encode, encoder.item_embeddings()
        else:
            forward = functools.partial(encoder, item_input=item_input)
            encode = functools.partial(encoder.encode, item_input=item_input)
            table = encoder.item_embeddings(item_input)
        return Tower(forward, encode, table, self.content.serving_table(table, content), parts, item_input)

    # -- outputs --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_artifacts(self, model, tracker) -> None:
        """Geometry (Wang & Isola): alignment of each test history's representation with its target item, and
        uniformity of the items and of the sequence representations."""
        from engine.evaluate import alignment, uniformity

        if not self.config.evaluate.geometry:
            return
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(0)
        users = torch.randperm(self.data.num_users, generator=g)[:4096]
        seqs = self.data.padded_history("test", self.model_cfg.max_len)[users]
        device = next(model.parameters()).device
        tower = self._tower(model)
        reprs = by_length(tower.encode, seqs.to(device)).float().cpu()
        items = tower.serving_table.float().cpu()
        targets = self.data.target("test")[users]
        tracker.log_metrics({
            "geometry/alignment": alignment(reprs, items[targets]),
            "geometry/uniformity_items": uniformity(items[1:], generator=g),
            "geometry/uniformity_sequences": uniformity(reprs, generator=g),
        })
        model.train(was_training)

    def export_onnx(self, model, directory: str) -> dict[str, Any]:
        """The sequence encoder, the item table and the serving files (see :mod:`engine_seqrec.export`)."""
        from .export import export_sequence_model

        return export_sequence_model(self, model, directory)
