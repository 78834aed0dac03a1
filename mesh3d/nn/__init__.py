"""Shared learning core: the decoder (model), the shape encoder, the trainer and weights I/O."""
