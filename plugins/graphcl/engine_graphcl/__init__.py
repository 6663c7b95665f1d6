"""Graph contrastive learning for recommendation: LightGCN, SGL, SimGCL, XSimGCL and DCCF as parts composed in YAML."""

__all__ = ["plugin"]
