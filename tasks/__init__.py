"""Plain, typed work functions of ceta2vec. Nothing here needs a Prefect server."""
