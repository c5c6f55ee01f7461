"""Serve every ceta2vec deployment from one local process (no work pool, no worker).

    ceta2vec serve /data/incoming --site LK                   # or: python deployments/serve.py /data/incoming ...
    ceta2vec serve /data/incoming --ingest-every 60 --nightly-pretraining --more-chunks 2

Each deployment is created or updated by name on the Prefect server (`PREFECT_API_URL`), so
stopping and starting again keeps one deployment each, with the same schedules. The Prefect UI
(`prefect server start`) shows the runs and their artifacts. See deployments/definitions.py.
"""

from __future__ import annotations

import sys

from deployments.definitions import DeploymentDefinition


def serve_deployments(definitions: list[DeploymentDefinition], limit: int | None = None) -> None:
    """Blocks, running scheduled and triggered runs, until interrupted (then pauses the deployments)."""
    from prefect import serve

    serve(*[d.to_runner() for d in definitions], limit=limit)


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
