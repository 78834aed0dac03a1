"""Skin weights: geometric (heat diffusion from visible bones)."""
