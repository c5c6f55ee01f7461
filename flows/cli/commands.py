"""The `ceta2vec` command: one subcommand per flow, plus status and SQL over the workspace.

Options of a flow's subcommand are generated from the fields of its settings object, so the CLI and
the Prefect UI's parameter form always offer the same things.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import textwrap
import types
import typing
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from flows.cli import preflight
from flows.cli.parsing import CommandParser
from flows.cli.registry import Command, declare, declared
from flows.runtime.server import own_server
from schemas.settings import (
    DEFAULT_WORKSPACE,
    WORKSPACE_ENV,
    ClassifySettings,
    EmbedSettings,
    EvaluateSettings,
    IngestSettings,
    PipelineSettings,
    PretrainSettings,
    ReportSettings,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3

INGEST_EXAMPLES = """\
examples:
  ceta2vec ingest data/sample --labels data/sample/labels.csv --site sample
  ceta2vec ingest /data/soundtrap/2025-07 --site LK --sample-rate 48000 --channels all
  ceta2vec ingest 'recordings/**/*.flac' --segment-seconds 5 --hop-seconds 2.5 --strict
"""
STATUS_EXAMPLES = """\
examples:
  ceta2vec status
  ceta2vec status --workspace /data/ceta2vec --format json
"""
PRETRAIN_EXAMPLES = """\
examples:
  ceta2vec pretrain                                   # tiny preset, 3 chunks of 50 steps (CPU demo)
  ceta2vec pretrain --chunks 6                        # continue the same run for 3 more chunks
  ceta2vec pretrain --preset base --run base-2025 --chunks 200 --steps-per-chunk 1000 --batch-size 16 --crop-seconds 15
  ceta2vec pretrain --run tiny-held-out --exclude-recordings Lpod.wav --model-overrides num_hidden_layers=6
Re-running the same command after a crash or kill continues from the last complete chunk.
"""
EMBED_EXAMPLES = """\
examples:
  ceta2vec embed                                  # latest checkpoint of the latest run, every layer
  ceta2vec embed --run tiny --chunk 2 --layers 0 2 4 --units-k 100
  ceta2vec embed --poolings mean max --frame-dtype float16
Re-running adds nothing; segments ingested since the last run are embedded alone.
"""
SIMILAR_EXAMPLES = """\
examples:
  ceta2vec similar 3f2a9c0d1e2b4a5c-mix-000000
  ceta2vec similar 3f2a9c0d1e2b4a5c-mix-000000 -k 20 --layer 4 --model tiny@3
  ceta2vec similar 3f2a9c0d1e2b4a5c-mix-000000 --where "site = 'LK'" --format csv
  ceta2vec similar 3f2a9c0d1e2b4a5c-mix-000000 --where "label_column = 'species' AND label_value = 'humpback'"
"""
EXPORT_EXAMPLES = """\
examples:
  ceta2vec export --output vectors.parquet
  ceta2vec export --model tiny@3 --layer 2 --format npy --output layer2.npy   # + layer2.ids.csv
"""
EVALUATE_EXAMPLES = """\
examples:
  ceta2vec evaluate --label-column species
  ceta2vec evaluate --labels calls.csv --label-column call_type --background none --model tiny@3
  ceta2vec evaluate --label-column species --all-checkpoints      # does quality still rise with training?
"""
RUN_EXAMPLES = """\
examples:
  ceta2vec run data/sample --labels data/sample/labels.csv --label-column species --site sample --preset tiny
  ceta2vec run /data/hydrophone --site LK --preset small --chunks 20 --steps-per-chunk 500 --workspace /data/ws
  ceta2vec run /data/hydrophone --site LK --preset small --chunks 30 --workspace /data/ws   # 10 more chunks, then embed and report
Re-running the same command does (almost) nothing; after a crash or kill it finishes what was left.
"""
REPORT_EXAMPLES = """\
examples:
  ceta2vec report                                   # latest embedded model -> <workspace>/reports/<model>/
  ceta2vec report --model tiny@3 --layer 2 --label-column call_type
  ceta2vec report --max-points 20000 --media-points 500 --output /tmp/tiny-report
  ceta2vec report --serve                           # then serve the folder on http://127.0.0.1:8765/
  ceta2vec report --serve --rebuild                 # redraw first even if nothing changed
Open index.html (figures) or explorer.html (interactive map) from disk: no server, no network needed.
"""
SQL_EXAMPLES = """\
examples:
  ceta2vec sql "SELECT site, count(*) AS recordings, sum(duration_s)/3600 AS hours FROM recordings GROUP BY site"
  ceta2vec sql "SELECT file_name, start_s, rms_dbfs FROM segments_with_recordings WHERE is_silent" --format csv
  ceta2vec sql "SELECT path, stage, reason FROM ingest_errors WHERE severity = 'error'" --format json
tables: recordings, segments, labels, ingest_errors, ingest_runs, source_files, workspace_config;
views: segments_with_recordings, segment_labels, segment_audio (samples, from the Parquet dataset)
"""


def _unwrap(annotation):
    """(base type, is_list) of an annotation such as `float | None` or `list[str]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    if origin is dict:
        return dict, True
    return annotation, False


def _key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, booleans, lists), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_settings_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], positional: str | None = None) -> None:
    """One option per settings field: `sample_rate` becomes `--sample-rate`, typed and documented."""
    for name, field in model.model_fields.items():
        if name == "workspace":
            continue  # every subcommand has it; see _workspace_argument
        base, is_list = _unwrap(field.annotation)
        kwargs: dict = {"help": (field.description or "").replace("%", "%%")}  # argparse formats help with %
        if typing.get_origin(base) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(base))
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction  # --x / --no-x: a True default can be turned off
        elif base is datetime:
            kwargs["type"] = datetime.fromisoformat
        elif base is dict:
            kwargs["type"] = _key_value
            kwargs["metavar"] = "KEY=VALUE"
        elif base in (int, float, str):
            kwargs["type"] = base
        if not field.is_required() and base is not bool and field.default_factory is None:
            default = field.get_default(call_default_factory=False)
            if default is not None:
                kwargs["help"] = f"{kwargs['help']} Default: {default}."
        if name == positional:
            parser.add_argument(name, nargs="+" if is_list else None, metavar=name.rstrip("s").upper(), **kwargs)
        else:
            if is_list:
                kwargs["nargs"] = "+"
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                                required=field.is_required(), **kwargs)


def _workspace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", default=argparse.SUPPRESS,
        help=f"Workspace folder (default: ${WORKSPACE_ENV} or ./{DEFAULT_WORKSPACE}).",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="ceta2vec",
        description="Self-supervised wav2vec 2.0 for hydrophone recordings, orchestrated with Prefect.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="Show tracebacks (also CETA2VEC_DEBUG=1); by default an error is one line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="The whole pipeline: ingest, pretrain, embed, evaluate (with --label-column), report.",
        description="Ingest recordings, pretrain wav2vec 2.0 on them in checkpointed chunks, embed every segment "
        "(vectors, frame vectors, units), score the layers against a label column beside baselines, and draw the "
        "HTML report, as one Prefect flow with a subflow per stage. Each stage skips what is already done. "
        "Prints the report's path and commands to try next.",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(run, PipelineSettings, positional="sources")
    _workspace_argument(run)
    declare(run, Command(cmd_run, flow=("flows.pipeline", PipelineSettings), prefect=True))

    ingest = commands.add_parser(
        "ingest", help="Ingest recordings into the workspace (Parquet segments + DuckDB).",
        description="Decode, resample and segment recordings (WAV, FLAC, MP3, OGG, AIFF; any rate, any "
        "length) into the workspace. Re-running skips what is already there; bad files are reported "
        "in the ingest_errors table and the run goes on.",
        epilog=INGEST_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(ingest, IngestSettings, positional="sources")
    _workspace_argument(ingest)
    declare(ingest, Command(cmd_ingest, flow=("flows.ingest", IngestSettings), prefect=True))

    pretrain = commands.add_parser(
        "pretrain", help="Pretrain wav2vec 2.0 from scratch on the workspace's segments, in resumable chunks.",
        description="Self-supervised wav2vec 2.0 pretraining (contrastive + diversity loss) on the ingested "
        "segments, as chunks of optimiser steps each ending in a complete checkpoint. The feature encoder's "
        "strides are derived from the workspace's sample rate and --frame-ms.",
        epilog=PRETRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(pretrain, PretrainSettings)
    _workspace_argument(pretrain)
    declare(pretrain, Command(cmd_pretrain, flow=("flows.pretrain", PretrainSettings), needs_workspace=True, prefect=True))

    embed = commands.add_parser(
        "embed", help="Embed every segment with a trained checkpoint: vectors per layer, frame vectors, units.",
        description="Per-segment vectors of every layer (pooled over valid frames), per-frame vectors in "
        "Parquet, the quantizer's codes and k-means units per layer, stored in DuckDB for SQL and search.",
        epilog=EMBED_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(embed, EmbedSettings)
    _workspace_argument(embed)
    declare(embed, Command(cmd_embed, flow=("flows.embed", EmbedSettings), needs_workspace=True, prefect=True))

    similar = commands.add_parser(
        "similar", help="Nearest segments to a segment (exact cosine search).",
        epilog=SIMILAR_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    similar.add_argument("segment_id", metavar="SEGMENT_ID")
    similar.add_argument("-k", type=int, default=10, help="Neighbours to show (the segment itself comes first).")
    similar.add_argument("--layer", type=int, help="Layer (default: the middle transformer layer).")
    similar.add_argument("--model", help="Embedding model, e.g. tiny@3 (default: the latest embedded).")
    similar.add_argument("--pooling", default="mean", choices=["mean", "std", "max"])
    similar.add_argument("--where", help="SQL filter on the neighbours (columns: segment_id, file_name, start_s, site, "
                         "recording_id, start_time, distance, and per label the segment takes: label_column, "
                         "label_value, span_start_s, span_end_s); applied before the top k, so results stay exact.")
    similar.add_argument("--hnsw", action="store_true",
                         help="Use the layer's HNSW index (approximate; unfiltered queries only; see `ceta2vec index`).")
    similar.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _workspace_argument(similar)
    declare(similar, Command(cmd_similar, needs_workspace=True))

    index = commands.add_parser(
        "index", help="Build an optional HNSW index for a layer's vectors and measure its recall@10.",
        description="Builds a DuckDB vss HNSW index (cosine) of one model/layer in its own file under "
        "indexes/, measures its recall@10 against exact search on up to 100 queries, and records it in "
        "the vector_indexes table. Exact search stays the default; `similar --hnsw` uses the index.",
        epilog="examples:\n  ceta2vec index --layer 2\n  ceta2vec index --model tiny@3 --layer 4 --pooling max\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    index.add_argument("--model", help="Embedding model (default: the latest embedded).")
    index.add_argument("--layer", type=int, help="Layer (default: the middle transformer layer).")
    index.add_argument("--pooling", default="mean", choices=["mean", "std", "max"])
    _workspace_argument(index)
    declare(index, Command(cmd_index, needs_workspace=True))

    export = commands.add_parser(
        "export", help="Export segment embeddings to Parquet, CSV or NumPy.",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--model", help="Embedding model (default: the latest embedded).")
    export.add_argument("--layer", type=int, help="One layer (default: all).")
    export.add_argument("--pooling", default="mean", choices=["mean", "std", "max"])
    export.add_argument("--format", choices=["parquet", "csv", "npy"], default=None,
                        help="Default: from the output's extension.")
    export.add_argument("--output", required=True, help="File to write.")
    _workspace_argument(export)
    declare(export, Command(cmd_export, needs_workspace=True))

    evaluate = commands.add_parser(
        "evaluate", help="Scorecard of every layer and unit inventory against labels, beside baselines.",
        description="k-NN (k = 1, 5), linear probe, retrieval, clustering and unit purity/PNMI per layer, with "
        "splits by recording and bootstrap intervals over recordings; log-mel, MFCC and random-weight baselines "
        "on the same segments. Results go to the evaluations table, a figure in the model's report folder "
        "(reports/<model>/figures/) and a Prefect artifact.",
        epilog=EVALUATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(evaluate, EvaluateSettings)
    _workspace_argument(evaluate)
    declare(evaluate, Command(cmd_evaluate, flow=("flows.evaluate", EvaluateSettings), needs_workspace=True, prefect=True))

    report = commands.add_parser(
        "report", help="Figures, a self-contained HTML report and an interactive explorer of what the network learned.",
        description="UMAP maps of every layer, unit atlases with exemplar spectrograms and clips, training health "
        "and the data summary as one HTML page (index.html), and an interactive map of the segments "
        "(explorer.html: hover, listen, nearest neighbours, filters). Both open from disk without a server.",
        epilog=REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(report, ReportSettings)
    _workspace_argument(report)
    declare(report, Command(cmd_report, flow=("flows.report", ReportSettings), needs_workspace=True, prefect=True))
    report.add_argument("--serve", nargs="?", type=int, const=8765, default=None, metavar="PORT",
                        help="After writing, serve the report folder on http://127.0.0.1:PORT/ (default 8765) "
                             "until interrupted: for browsers or pages that refuse file:// links.")
    report.add_argument("--rebuild", action="store_true",
                        help="With --serve: redraw the report even when its inputs are unchanged since it was "
                             "drawn (without it, an up-to-date folder is served at once).")

    explain = commands.add_parser(
        "explain", help="Saliency and attention figures (PNG and SVG) for one segment.",
        epilog="examples:\n  ceta2vec explain 3f2a9c0d1e2b4a5c-mix-000000\n"
               "  ceta2vec explain 3f2a9c0d1e2b4a5c-mix-000000 --unit 7 --layer 2 --output /tmp/why\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument("segment_id", metavar="SEGMENT_ID")
    explain.add_argument("--unit", type=int, help="k-means unit (default: the one most of the segment's frames get).")
    explain.add_argument("--layer", type=int, help="Layer of the unit (default: the middle transformer layer).")
    explain.add_argument("--model", help="Embedding model, e.g. tiny@3 (default: the latest embedded).")
    explain.add_argument("--output", help="Folder (default: <workspace>/reports/<model>/explain/<segment>/).")
    _workspace_argument(explain)
    declare(explain, Command(cmd_explain, needs_workspace=True))

    status = commands.add_parser(
        "status", help="What the workspace holds: recordings, segments, errors, models and their checkpoints, "
        "embedded layers, latest verdicts and reports.",
        epilog=STATUS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _workspace_argument(status)
    declare(status, Command(cmd_status, needs_workspace=True))

    from flows.cli.detection import add_detection_commands

    add_detection_commands(commands, add_settings_arguments, _workspace_argument, ClassifySettings)
    _add_plugin_commands(commands)

    sql = commands.add_parser(
        "sql", help="Run a read-only SQL query over the workspace (DuckDB).",
        description="Run a read-only SQL query over the workspace's DuckDB database. Statements that "
        "would write (INSERT, UPDATE, CREATE, COPY, ATTACH, ...) are refused.",
        epilog=SQL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sql.add_argument("query", metavar="QUERY")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--max-rows", type=int, default=200, help="Rows shown in table format (csv/json print all).")
    sql.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="Stop the query after this long (default: 300; 0: no limit).")
    sql.add_argument("--memory-limit", metavar="SIZE",
                     help="Stop the query when it needs more memory, e.g. 4GB (default: half the machine's).")
    _workspace_argument(sql)
    declare(sql, Command(cmd_sql, needs_workspace=True))
    return parser


# Outer layers add commands through this entry-point group (deployments adds `serve`): the CLI
# finds them installed and never imports them, so the layers depend one way only.
PLUGIN_GROUP = "ceta2vec.commands"


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(commands)


def _settings(model: type[BaseModel], args: argparse.Namespace) -> BaseModel:
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    for name, value in values.items():
        if _unwrap(model.model_fields[name].annotation)[0] is dict:
            values[name] = dict(value)
    return model(**values)


def _err(message: str) -> None:
    print(f"ceta2vec: error: {message}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    import shutil

    from flows.cli.console import print_pipeline_result
    from flows.pipeline import pipeline
    from tasks.training.loop import TrainingDiverged

    try:
        result = pipeline(_settings(PipelineSettings, args))
    except TrainingDiverged as exc:
        _err(f"{exc}. The last complete checkpoint is kept; lower the learning rate or check the data, then re-run.")
        return EXIT_FAILED
    program = "ceta2vec" if shutil.which("ceta2vec") else sys.argv[0]
    print_pipeline_result(result, program)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.cli.console import print_ingest_result
    from flows.ingest import IngestRunFailed, ingest  # Prefect is imported only when a flow runs

    settings = _settings(IngestSettings, args)
    try:
        result = ingest(settings)
    except IngestRunFailed as exc:
        _err(str(exc))
        return EXIT_FAILED
    if not result.recordings_found:  # nothing was written: a typo, not an empty run
        _err(str(preflight.NothingToIngest(result.failures)))
        return EXIT_USAGE
    print_ingest_result(result)
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    from flows.cli.console import print_pretrain_result
    from flows.pretrain import pretrain
    from tasks.training.loop import TrainingDiverged

    try:
        result = pretrain(_settings(PretrainSettings, args))
    except TrainingDiverged as exc:
        _err(f"{exc}. The last complete checkpoint is kept; lower --learning-rate or check the data, then re-run.")
        return EXIT_FAILED
    print_pretrain_result(result)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.cli.console import print_scorecard
    from flows.evaluate import evaluate

    print_scorecard(evaluate(_settings(EvaluateSettings, args)))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from tasks.report.freshness import serve_folder, up_to_date_or_drawn
    from tasks.workspace import Workspace

    drawn = []

    def draw(settings: ReportSettings):
        from flows.report import report

        drawn.append(report(settings))
        return drawn[-1]

    serving = getattr(args, "serve", None) is not None
    settings = _settings(ReportSettings, args)
    # A plain `report` always draws; --serve serves a folder that shows the current inputs as it is.
    outcome, pages = up_to_date_or_drawn(Workspace.at(settings.workspace), settings, draw,
                                         rebuild=not serving or getattr(args, "rebuild", False))
    note = " (up to date: its inputs are unchanged since it was drawn)" if outcome == "up to date" else ""
    print(f"report:   {pages['report']}{note}\nexplorer: {pages['explorer']}\nopen:     {Path(pages['report']).as_uri()}")
    if drawn and drawn[-1].published:
        print(f"copied:   {drawn[-1].published}/index.html")
    if serving:
        server = serve_folder(Path(pages["report"]).parent, args.serve)
        print(f"serving:  http://{server.server_address[0]}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return EXIT_OK


def _serves_current_report(args: argparse.Namespace) -> bool:
    """`report --serve` of a folder that already shows the current inputs: no flow, so no Prefect server."""
    if args.command != "report" or getattr(args, "serve", None) is None or getattr(args, "rebuild", False):
        return False
    from tasks.report.freshness import current_pages, plan_report
    from tasks.workspace import Workspace

    settings = _settings(ReportSettings, args)
    return current_pages(plan_report(Workspace.at(settings.workspace), settings)) is not None


def cmd_embed(args: argparse.Namespace) -> int:
    from flows.embed import embed

    result = embed(_settings(EmbedSettings, args))
    print(json.dumps(result.as_dict(), indent=2, default=str))
    return EXIT_OK


def _print_result(result, fmt: str, max_rows: int = 200) -> None:
    from flows.cli.console import print_table

    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(result.columns, row)) for row in result.rows], indent=2, default=str))
    else:
        print_table(result.columns, result.rows, max_rows=max_rows)


def cmd_similar(args: argparse.Namespace) -> int:
    from tasks.catalog.search import similar
    from tasks.workspace import Workspace, database

    workspace = Workspace.at(getattr(args, "workspace", None))
    # --where is SQL someone typed: it runs on the same locked-down connection as `ceta2vec sql`
    # (--hnsw refuses filters, and needs the vss extension that connection may not load).
    opened = database.querying(workspace) if args.where else database.reading(workspace)
    with opened as conn:
        result = similar(conn, args.segment_id, args.k, args.layer, args.model, args.pooling, args.where,
                         approximate=args.hnsw, workspace=workspace)
    _print_result(result, args.format)
    return EXIT_OK


def cmd_index(args: argparse.Namespace) -> int:
    from tasks.catalog.embeddings import resolve_model
    from tasks.catalog.search import default_layer
    from tasks.catalog.vector_index import build_hnsw
    from tasks.workspace import Workspace, database

    workspace = Workspace.at(getattr(args, "workspace", None))
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        resolved = resolve_model(conn, args.model)
        model = resolved.model_id
        layer = default_layer(resolved.layers) if args.layer is None else args.layer
        info = build_hnsw(conn, workspace, model, layer, args.pooling)
    print(f"HNSW index of {model} layer {layer} ({args.pooling}): {info.rows} vectors, built in "
          f"{info.build_seconds:.2f} s, recall@10 against exact search {info.recall_at_10:.3f} "
          f"over {info.queries} queries\n{info.path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from tasks.catalog.search import export_embeddings
    from tasks.workspace import Workspace, database

    output = Path(args.output)
    fmt = args.format or {".parquet": "parquet", ".csv": "csv", ".npy": "npy"}.get(output.suffix.lower())
    if fmt is None:
        _err("give --format parquet|csv|npy, or an --output ending in .parquet, .csv or .npy")
        return EXIT_USAGE
    with database.reading(Workspace.at(getattr(args, "workspace", None))) as conn:
        rows, path = export_embeddings(conn, args.model, args.layer, args.pooling, fmt, output)
    print(f"{rows} vectors written to {path}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from tasks.report.explain import explain_segment
    from tasks.workspace import Workspace

    for path in explain_segment(Workspace.at(getattr(args, "workspace", None)), args.segment_id, args.model,
                                args.unit, args.layer, args.output):
        print(path)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from flows.cli.console import print_status
    from tasks.catalog import recordings, status
    from tasks.workspace import Workspace, database

    workspace = Workspace.at(getattr(args, "workspace", None))
    with database.reading(workspace) as conn:
        print_status(status.workspace_status(conn, workspace), args.format)
        missing = recordings.missing_segment_files(conn, workspace)
    if missing:  # the counts above still include them
        print(f"ceta2vec: warning: {recordings.describe_missing(missing)}", file=sys.stderr)
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    from tasks.catalog.queries import process_memory_capped, run_query
    from tasks.workspace import Workspace

    with process_memory_capped(args.memory_limit):  # this process runs the query alone
        result = run_query(Workspace.at(getattr(args, "workspace", None)), args.query, args.timeout, args.memory_limit)
    _print_result(result, args.format, args.max_rows)
    return EXIT_OK




def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CETA2VEC_DEBUG", "") not in ("", "0")
    try:
        command = declared(args)
        if command.needs_workspace:
            _require_workspace(args)
        flow = command.flow
        if flow:  # invalid options, missing paths, models and layers fail before a server starts
            preflight.check(_settings(flow[1], args))
            if _serves_current_report(args):
                flow = None  # nothing to draw: served at once, without a Prefect server
        if not debug and command.prefect:
            from flows.cli.console import quiet_tracebacks

            quiet_tracebacks()  # the message below says what went wrong; --debug shows Prefect's tracebacks too
        with own_server(flow is not None) as use_server:
            if flow:
                importlib.import_module(flow[0])  # while the server starts
            use_server()
            return command.run(args)
    except Exception as exc:
        if debug:
            raise
        return _user_error(exc)
    except KeyboardInterrupt:
        _err("interrupted; committed work is kept, re-run the same command to finish")
        return 130


def _require_workspace(args: argparse.Namespace) -> None:
    from tasks.workspace import Workspace
    from tasks.workspace.database import WorkspaceError

    workspace = Workspace.at(getattr(args, "workspace", None))
    if not workspace.exists():
        raise WorkspaceError(f"no ceta2vec workspace at {workspace.root} (run `ceta2vec ingest SOURCE "
                             f"--workspace {workspace.root}` first, or give the right --workspace)")


def _user_error(exc: Exception) -> int:
    """One line on stderr for an error a user can act on, and the exit status; anything else is re-raised."""
    import duckdb

    from tasks.audio.failures import disk_full
    from tasks.catalog.queries import QueryRefused
    from tasks.ingest.labels import LabelsError
    from tasks.workspace.database import WorkspaceError

    if (reason := disk_full(exc)) is not None:
        _err(f"{reason} while writing ({textwrap.shorten(str(exc), 300)}); nothing half-written was kept: "
             "free some space and run the same command again")
        return EXIT_USAGE
    try:
        raise exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _err(f"invalid settings: {problems}")
        return EXIT_USAGE
    except (WorkspaceError, LabelsError, QueryRefused, ValueError) as exc:
        _err(" ".join(str(exc).split()))
        return EXIT_USAGE
    except duckdb.Error as exc:  # e.g. a typo in a query: the message, not a traceback
        _err(textwrap.shorten(str(exc), 2000))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
