"""Data layer on polars: readers for standard formats, id maps, filters, splits, schema checks."""

from .interactions import InteractionData
from .readers import find_recbole_inter, read_interaction_table, read_lightgcn_txt, read_recbole_atomic, sha256_file
from .splits import check_ratios, split_counts, split_leave_one_out, split_random, split_temporal
from .transforms import IdMap, check_dense_ids, dedupe, filter_rating, kcore, map_ids

__all__ = [
    "InteractionData",
    "read_lightgcn_txt",
    "read_interaction_table",
    "read_recbole_atomic",
    "find_recbole_inter",
    "sha256_file",
    "filter_rating",
    "kcore",
    "dedupe",
    "IdMap",
    "map_ids",
    "check_dense_ids",
    "check_ratios",
    "split_counts",
    "split_random",
    "split_temporal",
    "split_leave_one_out",
]
