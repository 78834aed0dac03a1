"""Shape synthesis: octree occupancy tokens (tokenizer), the category-conditioned generator (model)
and its evaluation (evaluate). See docs/shape.md."""
