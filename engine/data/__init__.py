"""Data layer on polars: readers for standard formats, id maps, filters, splits, schema checks."""

from .interactions import InteractionData

__all__ = ["InteractionData"]
