"""Sequential recommendation for engine: SASRec and GRU4Rec encoders, next-item losses, CL4SRec / DuoRec views."""

__all__ = ["plugin"]
