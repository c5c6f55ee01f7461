"""Thin Prefect flows: each reads like a step of the pipeline; the work lives in `tasks/`."""

import os

# ceta2vec runs on machines without internet: Prefect's server must not try to send telemetry
# (on the ephemeral SQLite server the attempt also collides with the run's own writes).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
