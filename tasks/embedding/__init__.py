"""Checkpoint to vectors: per-layer embeddings, discrete units, vector search."""
