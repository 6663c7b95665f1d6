"""The ``graph_cf`` task: graph collaborative filtering with optional contrastive views, composed in YAML.

A model is an encoder (``lightgcn``, ``dccf``), an optional augmenter, a ranking loss (``bpr``) and an optional
contrastive term (any objective from the registry, ``infonce`` by default) on one of three kinds of views:

* ``views: augment`` — two views from the augmenter: two dropped-out graphs resampled each epoch (SGL: edge_dropout,
  node_dropout, random_walk), or two noisy propagations (SimGCL: embedding_noise).
* ``views: cross_layer`` — XSimGCL: one noisy propagation serves the ranking loss, and its final embeddings are
  contrasted with the embeddings of layer ``layer`` of the same pass.
* ``views: encoder`` — the pairs of views the encoder itself produces (DCCF: graph, intent and adaptive-mask views).

The contrastive term is computed on the unique users and unique positive items of the batch, users and items apart.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from pydantic import Field

from engine.components import ComponentConfig, ObjectiveOutput, require_pair_objective
from engine.config import AugmenterSpec, EncoderSpec, ObjectiveSpec
from engine.content import ContentConfig, load_item_content
from engine.distributed import ShardedBatch, local_view
from engine.errors import ConfigError, DataError
from engine.evaluate import ItemSets, full_ranking
from engine.evaluate.cold import cold_warm_ranking
from engine.task import Task

from .content import GraphContent
from .graph import build_graph
from .sampling import NegativeSampler


class ContrastConfig(ComponentConfig):
    objective: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec(name="infonce", weight=0.1),
                                     description="the contrastive objective; its `weight` is λ")
    views: Literal["augment", "cross_layer", "encoder"] = "augment"
    layer: int = Field(1, ge=0, description="cross_layer: the layer contrasted with the final embeddings (l*)")


class GraphCFModelConfig(ComponentConfig):
    encoder: EncoderSpec = Field(default_factory=lambda: EncoderSpec(name="lightgcn"))
    augmenter: AugmenterSpec | None = None
    perturb_main: bool = Field(False, description="the ranking loss also sees the augmented (noisy) pass (XSimGCL)")
    skip_ego: bool = Field(False, description="average propagated layers only, not layer 0 (SimGCL/XSimGCL)")
    loss: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec(name="bpr"))
    contrast: ContrastConfig | None = None
    reg_weight: float = Field(1e-4, ge=0, description="L2 on the batch's ego embeddings, /2 per row (LightGCN)")
    content: ContentConfig | None = Field(None, description="item side information (needs data.item_features)")


class GraphScorer(torch.nn.Module):
    """The exported graph: propagated embeddings as constants, scores = E_u[user] · E_iᵀ."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("user_embedding", users.detach().float().clone())
        self.register_buffer("item_embedding", items.detach().float().clone())

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        return self.user_embedding[user] @ self.item_embedding.T


class GraphCFTask(Task):
    """Graph collaborative filtering (LightGCN, SGL, SimGCL, XSimGCL, DCCF), full-ranking evaluation."""

    name = "graph_cf"
    ModelConfig = GraphCFModelConfig

    # -- data -----------------------------------------------------------------------------------------------------
    def load_data(self) -> None:
        self.data = self.config.data.build(self.registry).load()
        self.data, self.item_features, self.cold = load_item_content(self.config.data, self.data)
        d = self.data
        if d.train.height == 0:
            raise DataError(f"{self.config.data.options.get('path')}: the training split is empty")
        self.graph = build_graph(torch.tensor(d.train["user"].to_numpy()), torch.tensor(d.train["item"].to_numpy()),
                                 d.num_users, d.num_items)
        self.warm = torch.zeros(d.num_items, dtype=torch.bool)
        self.warm[self.graph.items] = True
        self.sampler = NegativeSampler(self.graph.users, self.graph.items, d.num_items,
                                       candidates=None if self.cold is None else torch.nonzero(self.warm).flatten())
        self.model_cfg: GraphCFModelConfig = self.config.model
        if self.model_cfg.content is not None and self.item_features is None:
            raise ConfigError("model.content: needs data.item_features (the item feature table)")

    def data_summary(self) -> dict[str, Any]:
        out = self.data.summary()
        if self.item_features is not None:
            out.update(self.item_features.summary())
        if self.cold is not None:
            out.update({"cold_items.valid": int(self.cold.valid.size), "cold_items.test": int(self.cold.test.size)})
        return out

    def has_split(self, split: str) -> bool:
        return (self.data.valid is not None and self.data.valid.height > 0) if split == "valid" else True

    # -- model ----------------------------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        m = self.model_cfg
        sizes = {"num_users": self.data.num_users, "num_items": self.data.num_items}
        model = torch.nn.Module()
        model.encoder = m.encoder.build(self.registry, **sizes)
        model.loss = m.loss.build(self.registry)
        self.augmenter = m.augmenter.build(self.registry, **sizes) if m.augmenter is not None else None
        if self.augmenter is not None and isinstance(self.augmenter, torch.nn.Module):
            model.augmenter = self.augmenter
        if m.contrast is not None:
            model.contrast = require_pair_objective(m.contrast.objective.build(self.registry),
                                                    "model.contrast.objective")
            if m.contrast.views == "encoder" and not hasattr(model.encoder, "contrast_pairs"):
                raise ConfigError(f"model.contrast.views: encoder {m.encoder.name!r} produces no contrastive views; "
                                  "use 'augment' or 'cross_layer'")
        params = inspect.signature(model.encoder.forward).parameters
        self._check_combination(model.encoder, params)
        self._encoder_kwargs = {"skip_ego": m.skip_ego} if "skip_ego" in params else {}
        self.content = None
        if m.content is not None:
            if m.content.input and "item_input" not in params:
                raise ConfigError(f"model.content.input: encoder {m.encoder.name!r} takes no item input; set "
                                  "model.content.input: false (content then scores items through its own view)")
            self.content = GraphContent.build(self.registry, m.content, self.item_features, self.warm,
                                              model.encoder.embedding_dim, model)
        self._views: tuple[Any, Any] | None = None
        return model

    def _check_combination(self, encoder, params) -> None:
        """Reject encoder / augmenter / contrast combinations that would fail (or be ignored) only once training runs."""
        m = self.model_cfg
        kind = getattr(self.augmenter, "view_kind", None)
        layers = getattr(encoder, "num_layers", None)
        if m.contrast is not None and m.contrast.views == "augment" and m.augmenter is None:
            raise ConfigError("model.contrast.views: 'augment' needs model.augmenter (e.g. edge_dropout)")
        if m.perturb_main and kind != "embedding":
            got = f"not {m.augmenter.name!r}" if m.augmenter is not None else "at model.augmenter"
            raise ConfigError(f"model.perturb_main: needs an embedding augmenter (e.g. embedding_noise), {got}")
        noisy = m.perturb_main or (m.contrast is not None and m.contrast.views == "augment")
        if noisy and kind == "embedding" and "perturb" not in params:
            raise ConfigError(f"model.augmenter: encoder {m.encoder.name!r} takes no embedding perturbation, so "
                              f"{m.augmenter.name!r} cannot make its views; use a graph augmenter (e.g. edge_dropout)")
        per_layer = getattr(self.augmenter, "num_layers", None)
        if per_layer is not None and layers is not None and per_layer != layers:
            raise ConfigError(f"model.augmenter.num_layers: {per_layer} graphs per view, but the encoder has "
                              f"{layers} layers")
        if m.contrast is not None and m.contrast.views == "cross_layer" and layers is not None \
                and m.contrast.layer > layers:
            raise ConfigError(f"model.contrast.layer: {m.contrast.layer} but the encoder has {layers} layers")

    def _encode(self, model, graph=None, perturb=None, content=None):
        """The encoder's pass; with ``model.content``, ``content`` (the content embeddings, computed once per step)
        is the item input, and the item-graph view is added to the items."""
        kwargs = dict(self._encoder_kwargs)
        if perturb is not None:
            kwargs["perturb"] = perturb
        if self.content is not None and self.model_cfg.content.input:
            kwargs["item_input"] = model.content() if content is None else content
        enc = model.encoder(self.graph if graph is None else graph, **kwargs)
        return enc if self.content is None else self.content.with_item_graph(enc)

    # -- training -------------------------------------------------------------------------------------------------
    def on_epoch_start(self, model, epoch: int, generator: torch.Generator) -> None:
        aug = self.augmenter
        device = next(model.parameters()).device
        if self.graph.adj.device != device:
            self.graph = self.graph.to(device)
        self._views = None
        if aug is not None and getattr(aug, "view_kind", None) == "graph":
            with torch.no_grad():  # SGL resamples both views once per epoch
                self._views = (self._to(aug(self.graph, generator), device), self._to(aug(self.graph, generator), device))

    @staticmethod
    def _to(graph, device):
        return [g.to(device) for g in graph] if isinstance(graph, list) else graph.to(device)

    def num_batches(self) -> int:
        n, b = self.graph.users.numel(), self.config.train.batch_size
        return (n + b - 1) // b

    def train_batches(self, epoch: int, generator: torch.Generator):
        users, items = self.graph.users.cpu(), self.graph.items.cpu()
        order = torch.randperm(users.numel(), generator=generator)
        b = self.config.train.batch_size
        for start in range(0, order.numel(), b):
            idx = order[start : start + b]
            u, i = users[idx], items[idx]
            yield u, i, self.sampler.sample(u, generator)

    def shard_batch(self, batch, shard) -> ShardedBatch:
        """Data-parallel: each rank keeps its rows of ``(users, positives, negatives)`` and its slice of the global
        batch's unique users and items (the contrast's anchors; the objective gathers the other ranks' as
        candidates). The propagation runs whole on every rank, with the same noise draws (same RNG state)."""
        u, i, j = batch
        n = u.numel()
        part = shard.for_rows(n)
        local = (part.take(u), part.take(i), part.take(j), part.take(torch.unique(u)), part.take(torch.unique(i)))
        return ShardedBatch(local, part, {"rows": n})

    def check_data_parallel(self, model) -> None:
        super().check_data_parallel(model)
        if self.content is not None:
            raise ConfigError("--nproc: model.content does not train data-parallel yet (its alignment terms are "
                              "not split over ranks); use --nproc 1")

    def training_step(self, model, batch) -> ObjectiveOutput:
        m = self.model_cfg
        device = next(model.parameters()).device
        uu = ii = None
        batch, share, totals = local_view(batch, "rows")  # share: of each mean over the global batch's rows
        if totals is not None:  # this rank's rows, and its anchors of the contrast
            u, i, j, uu, ii = (t.to(device) for t in batch)
        else:
            u, i, j = (t.to(device) for t in batch)
        noise = self.augmenter if getattr(self.augmenter, "view_kind", None) == "embedding" else None
        content_parts = model.content.parts() if self.content is not None else None
        content = None if content_parts is None else content_parts.total
        enc = self._encode(model, perturb=noise if m.perturb_main else None, content=content)
        rec = model.loss(enc.users[u], enc.items[i], enc.items[j])
        parts = {f"rec/{k}": share(v, u.numel()) for k, v in rec.parts.items()}
        total = m.loss.weight * share(rec.loss, u.numel())
        if m.reg_weight > 0:
            ego = enc.layers[0]
            n_u = self.data.num_users
            reg = (ego[u].pow(2).sum() + ego[n_u + i].pow(2).sum() + ego[n_u + j].pow(2).sum()) / (2 * u.numel())
            parts["reg"] = share(m.reg_weight * reg, u.numel())
            total = total + parts["reg"]
        for name, value in enc.extra_losses.items():  # weight penalties: the same on every rank, not shared out
            parts[name] = value
            total = total + value
        if m.contrast is not None:
            cl = self._contrast(model, enc, u, i, noise, content, uu, ii)
            parts["contrast"] = cl
            total = total + m.contrast.objective.weight * cl
        if self.content is not None:
            for name, value in self.content.losses(model, enc, content_parts, u, i, j).items():
                parts[name] = value
                total = total + value
        return ObjectiveOutput(total, parts)

    def _contrast(self, model, enc, u, i, noise, content=None, uu=None, ii=None) -> torch.Tensor:
        """The contrast on the batch's unique users and items (``uu``, ``ii``: this rank's slice of them when
        data-parallel)."""
        c = self.model_cfg.contrast
        n_u = self.data.num_users
        if uu is None:
            uu, ii = torch.unique(u), torch.unique(i)
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        if c.views == "augment":
            if self._views is not None:
                v1 = self._encode(model, self._views[0], content=content)
                v2 = self._encode(model, self._views[1], content=content)
            else:
                v1 = self._encode(model, perturb=noise, content=content)
                v2 = self._encode(model, perturb=noise, content=content)
            pairs.append((torch.cat([v1.users, v1.items]), torch.cat([v2.users, v2.items])))
        elif c.views == "cross_layer":
            if c.layer >= len(enc.layers):
                raise ConfigError(f"model.contrast.layer: {c.layer} but the encoder has {len(enc.layers) - 1} layers")
            pairs.append((torch.cat([enc.users, enc.items]), enc.layers[c.layer]))
        else:
            pairs.extend((enc.views[a], enc.views[b]) for a, b in model.encoder.contrast_pairs)
        loss = torch.zeros((), device=u.device)
        for a, b in pairs:
            loss = loss + model.contrast(a[uu], b[uu]).loss + model.contrast(a[n_u + ii], b[n_u + ii]).loss
        return loss

    # -- evaluation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embeddings(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        device = next(model.parameters()).device
        if self.graph.adj.device != device:
            self.graph = self.graph.to(device)
        if self.content is None:
            enc = self._encode(model)
            return enc.users, enc.items
        content = model.content()
        enc = self._encode(model, content=content)
        return enc.users, self.content.serving_items(enc, content)

    def evaluate(self, model, split: str) -> dict[str, float]:
        d = self.data
        target = d.valid if split == "valid" else d.test
        if target is None or target.height == 0:
            raise DataError(f"the {split} split is empty: nothing to evaluate")
        seen = [d.train] + ([d.valid] if split == "test" and d.valid is not None else [])
        import polars as pl

        seen_frame = pl.concat([f.select("user", "item") for f in seen])
        users, items = self.embeddings(model)
        ev = self.config.evaluate

        def score(batch):
            return users[batch.to(users.device)] @ items.T

        if self.cold is not None:
            metrics = cold_warm_ranking(score, target, seen_frame, d.num_users, d.num_items, self.cold.of_split(split),
                                        torch.nonzero(self.warm).flatten().numpy(), ev.ks, ev.metrics, ev.chunk_size)
        else:
            metrics = full_ranking(score, ItemSets.from_frame(target, d.num_users),
                                   ItemSets.from_frame(seen_frame, d.num_users), ev.ks, ev.metrics, ev.chunk_size)
        model.train()
        return metrics

    # -- outputs --------------------------------------------------------------------------------------------------
    def log_artifacts(self, model, tracker) -> None:
        from .geometry_plot import log_geometry

        if self.config.evaluate.geometry:
            users, items = self.embeddings(model)
            log_geometry(users.cpu(), items.cpu(), self.graph.users.cpu(), self.graph.items.cpu(), tracker)

    def export_onnx(self, model, directory: str) -> dict[str, Any]:
        from pathlib import Path

        import numpy as np
        import polars as pl

        from engine.export import export_onnx, parity_check

        users, items = self.embeddings(model)
        scorer = GraphScorer(users.cpu(), items.cpu()).eval()
        path = Path(directory) / "model.onnx"
        example = torch.arange(min(4, self.data.num_users))
        export_onnx(scorer, (example,), path, ["user"], ["scores"], dynamic_batch=["user"])
        probe = torch.randint(0, self.data.num_users, (min(257, self.data.num_users),))
        report = parity_check(scorer, path, (probe,), ["user"])
        d = self.data
        out = Path(directory)
        np.save(out / "user_embeddings.npy", scorer.user_embedding.numpy())  # for `engine score --index faiss`
        np.save(out / "item_embeddings.npy", scorer.item_embedding.numpy())
        # every known interaction (train, valid and test) is seen: served recommendations never repeat one
        known = pl.concat([f.select("user", "item") for f in (d.train, d.valid, d.test) if f is not None])
        serving = write_serving_files(out, "graph", d.user_ids, d.num_users, d.item_ids, d.num_items,
                                      known["user"].to_numpy(), known["item"].to_numpy(),
                                      extra={"user_embeddings": "user_embeddings.npy",
                                             "item_embeddings": "item_embeddings.npy"})
        out = {"path": str(path), "num_users": self.data.num_users, "num_items": self.data.num_items,
               "inputs": {"user": "int64[batch]"}, "outputs": {"scores": "float32[batch, num_items]"}, **report,
               "serving": serving}
        if self.content is not None:
            from engine.content import export_content_encoder

            out["content_encoder"] = export_content_encoder(model.content, directory)
        return out


def write_serving_files(directory, family: str, user_ids, num_users: int, item_ids, num_items: int,
                        seen_users, seen_items, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What batch scoring and the HTTP server need beside the ONNX graph (read by ``engine_serving``):

    * ``users.parquet``: column ``user``, the original id of internal user ``i`` at row ``i``;
    * ``items.parquet``: column ``item``, the original id of score column ``j`` at row ``j``;
    * ``seen_indptr.npy`` / ``seen_items.npy``: CSR of the score columns each user has seen (never recommended),
      each ``(user, item)`` pair once.
    """
    import numpy as np
    import polars as pl

    users = pl.Series("user", np.arange(num_users)) if user_ids is None else pl.Series("user", user_ids)
    items = pl.Series("item", np.arange(num_items)) if item_ids is None else pl.Series("item", item_ids)
    pl.DataFrame([users]).write_parquet(directory / "users.parquet")
    pl.DataFrame([items]).write_parquet(directory / "items.parquet")
    seen_users, seen_items = np.asarray(seen_users, dtype=np.int64), np.asarray(seen_items, dtype=np.int64)
    if seen_users.size:  # a pair seen in two splits (or twice) is one exclusion
        pairs = np.unique(np.stack([seen_users, seen_items], 1), axis=0)
        seen_users, seen_items = pairs[:, 0], pairs[:, 1]
    order = np.lexsort((seen_items, seen_users))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(seen_users, minlength=num_users))]).astype(np.int64)
    np.save(directory / "seen_indptr.npy", indptr)
    np.save(directory / "seen_items.npy", seen_items[order])
    return {"family": family, "users": "users.parquet", "items": "items.parquet", "seen_indptr": "seen_indptr.npy",
            "seen_items": "seen_items.npy", **(extra or {})}
