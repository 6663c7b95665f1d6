"""Embedding geometry after training: alignment and uniformity (Wang & Isola, ICML'20), logged as metrics and a plot."""

from __future__ import annotations

import torch

from engine.evaluate import alignment, uniformity


def geometry_metrics(users: torch.Tensor, items: torch.Tensor, edge_users: torch.Tensor, edge_items: torch.Tensor,
                     max_pairs: int = 100_000, seed: int = 0) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(edge_users.numel(), generator=g)[:max_pairs]
    return {
        "geometry/alignment": alignment(users[edge_users[pick]], items[edge_items[pick]]),
        "geometry/uniformity_users": uniformity(users, generator=g),
        "geometry/uniformity_items": uniformity(items, generator=g),
    }


def log_geometry(users, items, edge_users, edge_items, tracker) -> dict[str, float]:
    metrics = geometry_metrics(users, items, edge_users, edge_items)
    tracker.log_metrics(metrics)
    if tracker.run_id is None:
        return metrics
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    degree = torch.bincount(edge_items, minlength=items.shape[0]).float()
    unit = torch.nn.functional.normalize(items.float(), dim=1)
    _, _, v = torch.pca_lowrank(unit, q=2, center=True)
    xy = (unit - unit.mean(0)) @ v[:, :2]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    sc = axes[0].scatter(xy[:, 0], xy[:, 1], c=torch.log1p(degree), s=2, cmap="viridis")
    fig.colorbar(sc, ax=axes[0], label="log(1 + item degree)")
    axes[0].set(title="item embeddings (normalised, PCA)", xlabel="PC1", ylabel="PC2")
    axes[1].hist(items.norm(dim=1).numpy(), bins=60, alpha=0.6, label="items")
    axes[1].hist(users.norm(dim=1).numpy(), bins=60, alpha=0.6, label="users")
    axes[1].set(title=f"embedding norms; align={metrics['geometry/alignment']:.3f} "
                      f"unif(i)={metrics['geometry/uniformity_items']:.3f}", xlabel="L2 norm")
    axes[1].legend()
    tracker.log_figure(fig, "plots/embedding_geometry.png")
    plt.close(fig)
    return metrics
