"""Serve every ceta2vec deployment from one local process (no work pool, no worker).

    ceta2vec serve /data/incoming --site LK                   # or: python deployments/serve.py /data/incoming ...
    ceta2vec serve /data/incoming --ingest-every 60 --nightly-pretraining --more-chunks 2

Each deployment is created or updated by name on the Prefect server (`PREFECT_API_URL`), so
stopping and starting again keeps one deployment each, with the same schedules. The Prefect UI
(`prefect server start`) shows the runs and their artifacts. See deployments/definitions.py.

`ceta2vec serve` is this module's command: the CLI finds it through the `ceta2vec.commands` entry
point (pyproject.toml), so flows never import deployments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deployments.definitions import DeploymentDefinition, Schedules, definitions, matching_workspace
from flows.cli.commands import _settings, _workspace_argument, add_settings_arguments
from flows.cli.registry import Command, declare
from schemas.settings import IngestSettings, PretrainSettings, RefreshSettings, ReportSettings
from tasks.workspace import Workspace

SERVE_EXAMPLES = """\
examples:
  ceta2vec serve /data/incoming --site LK                     # ingest every 15 min, refresh after each
  ceta2vec serve /data/incoming --ingest-every 60 --nightly-pretraining --pretrain-run tiny --more-chunks 2
  PREFECT_API_URL=http://127.0.0.1:4200/api ceta2vec serve /data/incoming   # runs shown in `prefect server start`'s UI
Deployments: ingest/watch-folder, continue-pretraining/nightly, refresh/after-new-data, score-new/classify-new,
report/weekly.
Stopping pauses them; serving again resumes the same deployments and schedules.
"""


def serve_deployments(definitions: list[DeploymentDefinition], limit: int | None = None) -> None:
    """Blocks, running scheduled and triggered runs, until interrupted (then pauses the deployments)."""
    from prefect import serve

    serve(*[d.to_runner() for d in definitions], limit=limit)


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """The `serve` sub-command (entry point `ceta2vec.commands`)."""
    serve = commands.add_parser(
        "serve", help="Serve the scheduled and triggered deployments from this process (no work pool needed).",
        description="Creates (or updates, by name) five Prefect deployments and runs them until interrupted: "
        "an incremental ingest of the watch folder on a cron schedule, continued pretraining at night (off "
        "unless --nightly-pretraining), a refresh (embed, evaluate, report) whenever one of those completes, "
        "new windows scored by each label's classifier whenever an embed completes, and a weekly report. The ingest options below are the watch folder's; dataset settings not given are "
        "taken from the workspace. For a work pool, see deployments/prefect.yaml.",
        epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(serve, IngestSettings, positional="sources")
    _workspace_argument(serve)
    when = serve.add_argument_group("schedules (cron strings in --timezone)")
    when.add_argument("--ingest-cron", default="*/15 * * * *", help="When to ingest the watch folder. Default: %(default)s.")
    when.add_argument("--ingest-every", type=float, metavar="SECONDS", help="Ingest on this interval instead of --ingest-cron.")
    when.add_argument("--pretrain-cron", default="0 2 * * *", help="When to continue pretraining. Default: %(default)s.")
    when.add_argument("--nightly-pretraining", action="store_true",
                      help="Switch the pretraining schedule on (it is created off: training takes the machine).")
    when.add_argument("--report-cron", default="0 6 * * 1", help="When to rebuild the report. Default: %(default)s.")
    when.add_argument("--timezone", default="UTC", help="Timezone of the cron schedules. Default: %(default)s.")
    what = serve.add_argument_group("what the scheduled runs do")
    what.add_argument("--pretrain-run", metavar="NAME", help="Pretraining run to continue (default: the preset's name, tiny).")
    what.add_argument("--more-chunks", type=int, default=1, help="Chunks each pretraining run adds. Default: %(default)s.")
    what.add_argument("--label-columns", nargs="*", metavar="COLUMN",
                      help="Label columns the refresh evaluates (default: every label column the workspace has).")
    what.add_argument("--limit", type=int, help="Most flow runs at a time (default: no limit).")
    declare(serve, Command(cmd_serve, prefect=True))  # the user's Prefect server: it starts none


def cmd_serve(args: argparse.Namespace) -> int:
    if args.more_chunks < 1:
        raise ValueError("--more-chunks must be at least 1")
    # Absolute paths: the served runs must not depend on the directory they start in.
    root = str(Workspace.at(getattr(args, "workspace", None)).root)
    args.workspace = root
    args.sources = [str(Path(s).expanduser().absolute()) for s in args.sources]
    watch = matching_workspace(_settings(IngestSettings, args))
    pretrain = PretrainSettings(workspace=root, **({"run": args.pretrain_run} if args.pretrain_run else {}))
    refresh = RefreshSettings(workspace=root, **({"label_columns": args.label_columns} if args.label_columns is not None else {}))
    schedules = Schedules(ingest_cron=args.ingest_cron, ingest_every_s=args.ingest_every, pretrain_cron=args.pretrain_cron,
                          pretrain_active=args.nightly_pretraining, report_cron=args.report_cron, timezone=args.timezone)
    serve_deployments(definitions(watch, pretrain, refresh, ReportSettings(workspace=root), args.more_chunks, schedules),
                      limit=args.limit)
    return 0


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
