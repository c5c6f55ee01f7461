"""All SQL over the workspace's tables: recordings, training runs, embeddings, evaluations, status."""
