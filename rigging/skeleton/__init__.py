"""Skeleton extraction: geometric (medial axis of the volume)."""
