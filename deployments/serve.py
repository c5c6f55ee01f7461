"""Serve ceta2vec's deployments from one local process (no work pool needed).

    .venv/bin/python deployments/serve.py /data/incoming --site LK --every-minutes 15

Each scheduled run ingests only the files that are new or changed in the watch folder; the
Prefect UI (`prefect server start`) shows the runs and their artifacts.
"""

from __future__ import annotations

import argparse

from prefect import serve

from flows.ingest import ingest
from schemas.settings import IngestSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("watch_folder")
    parser.add_argument("--site")
    parser.add_argument("--workspace")
    parser.add_argument("--every-minutes", type=int, default=15)
    args = parser.parse_args()
    settings = IngestSettings(sources=[args.watch_folder], site=args.site,
                              **({"workspace": args.workspace} if args.workspace else {}))
    watch = ingest.to_deployment(
        name="ingest-watch-folder",
        interval=args.every_minutes * 60,
        parameters={"settings": settings.model_dump(mode="json")},
        description="Incremental ingest of a watch folder: new and changed files only.",
    )
    serve(watch)


if __name__ == "__main__":
    main()
