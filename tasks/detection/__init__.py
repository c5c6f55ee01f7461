"""From embeddings to detections: labels in (CSV, Raven, the explorer), window features, one
classifier per label, scores of every window, events out (Raven selection tables, CSV, Parquet),
and the windows worth reviewing next."""
