"""Record linkage and deduplication with contrastive bi-encoders, as an engine plugin."""

__all__ = ["plugin"]
