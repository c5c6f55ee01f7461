"""Recordings in, Parquet segments out: discovery, per-file preparation, labels."""
