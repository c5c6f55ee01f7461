"""Thin Prefect flows: each reads like a step of the pipeline; the work lives in `tasks/`.

The dependency rule (checked by tests/test_layers.py): deployments → flows → tasks → schemas, never
back. `flows/runtime/` is the Prefect plumbing the stage flows share and imports none of them;
`flows/cli/` maps the command line onto the stage flows' settings; commands of an outer layer
(`serve`, from deployments) come in through the `ceta2vec.commands` entry point.
"""

import os

from flows.runtime.limits import duckdb_writer
from tasks.workspace import database

# ceta2vec runs on machines without internet: Prefect's server must not try to send telemetry
# (on the ephemeral SQLite server the attempt also collides with the run's own writes).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's 20 s start-up limit is too short on a busy 2-core machine (measured:
# a start timed out at load 6 while training ran beside it); waiting longer costs nothing.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# Flow runs writing the same workspace take turns through a Prefect concurrency limit; the tasks
# layer only knows that some gate may exist.
database.set_writer_gate(duckdb_writer)
