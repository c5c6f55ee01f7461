"""Thin Prefect flows: each reads like a step of the pipeline; the work lives in `tasks/`."""

import os

# ceta2vec runs on machines without internet: Prefect's server must not try to send telemetry
# (on the ephemeral SQLite server the attempt also collides with the run's own writes).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's 20 s start-up limit is too short on a busy 2-core machine (measured:
# a start timed out at load 6 while training ran beside it); waiting longer costs nothing.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
