"""Evaluation: full-ranking top-k metrics (LightGCN / RecBole protocol) and embedding geometry (Wang & Isola)."""

from .geometry import alignment, uniformity
from .metrics import METRICS, rank_metrics
from .ranking import ItemSets, full_ranking, topk_items

__all__ = ["METRICS", "ItemSets", "alignment", "full_ranking", "rank_metrics", "topk_items", "uniformity"]
