"""The detection commands: `label` (annotations in), `classify` (the flow), `detections` (events
out) and `suggest` (what to label next). Each subparser names its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.registry import Command, declare

LABEL_EXAMPLES = """\
examples:
  ceta2vec label calls.csv                                  # file, start_s, end_s, label[, positive]
  ceta2vec label Lpod.Table.1.selections.txt --label upcall # a Raven selection table
  ceta2vec label ceta2vec-tiny_3-segments-selection.csv --label upcall   # the explorer's Export CSV
  ceta2vec label review.csv                                 # `suggest` output with its positive column filled
  ceta2vec label --from-similar 3f2a9c0d1e2b4a5c-mix-000000 -k 20 --label upcall   # a segment and its neighbours
Re-importing a file replaces what it gave before; bad rows are named one line each, the others go in.
"""
CLASSIFY_EXAMPLES = """\
examples:
  ceta2vec classify --label upsweep --features logmel
  ceta2vec classify --label upsweep --features tiny@3:4 --split-by day
  ceta2vec classify --label-column call_type --background nocall --granularity segments
Re-running scores only windows not scored yet (new recordings); new labels train a new classifier.
"""
DETECTIONS_EXAMPLES = """\
examples:
  ceta2vec detections --label upsweep --output raven/            # one Raven table per file
  ceta2vec detections --label upsweep --threshold 0.8 --combined --output raven/
  ceta2vec detections --label upsweep --format csv --merge-gap 1 --output out/
"""
SUGGEST_EXAMPLES = """\
examples:
  ceta2vec suggest --label upsweep -k 50 --output review.csv
  ceta2vec suggest --label upsweep -k 50 --for-density --output density-review.csv
  # fill the positive column with yes / no / skip, then: ceta2vec label review.csv
"""


def add_detection_commands(commands: argparse._SubParsersAction, add_settings_arguments, workspace_argument,
                           classify_settings) -> None:
    label = commands.add_parser(
        "label", help="Import labelled spans: a CSV, a Raven selection table or the explorer's Export CSV.",
        description="Store positive and negative examples of a label in the annotations table, for `classify`.",
        epilog=LABEL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    label.add_argument("files", nargs="*", metavar="FILE")
    label.add_argument("--from-similar", metavar="SEGMENT_ID",
                       help="Label this segment and its nearest neighbours (as `ceta2vec similar` finds them).")
    label.add_argument("-k", type=int, default=20, help="--from-similar: segments to label, the query first. Default: 20.")
    label.add_argument("--layer", type=int, help="--from-similar: layer to search (default: the middle one).")
    label.add_argument("--model", help="--from-similar: embedding model, e.g. tiny@3 (default: the latest embedded).")
    label.add_argument("--negative", action="store_true", help="--from-similar: store them as negative examples.")
    label.add_argument("--label", help="Label every row with this (needed for an explorer export).")
    label.add_argument("--label-column", help="Raven: the column holding labels (default: Annotation).")
    label.add_argument("--recording", help="Raven: the audio file a one-file table without `Begin File` belongs to "
                                           "(default: from the table's name, <stem>.Table.1.selections.txt).")
    workspace_argument(label)
    declare(label, Command(cmd_label, needs_workspace=True))

    classify = commands.add_parser(
        "classify", help="Train a detector per label (model layer or log-mel/MFCC) and score every window.",
        description="A standardised logistic regression per label on a model layer's vectors or a baseline, "
        "validated by holding out whole recordings, sites or days (ROC-AUC, average precision, F1-optimal threshold, "
        "95%% bootstrap intervals), stored with its provenance; every window of the workspace is scored into the "
        "detections table.", epilog=CLASSIFY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(classify, classify_settings)
    workspace_argument(classify)
    declare(classify, Command(cmd_classify, flow=("flows.classify", classify_settings), needs_workspace=True, prefect=True))

    detections = commands.add_parser(
        "detections", help="Write detected events as Raven selection tables, CSV or Parquet.",
        description="Windows of a label's classifier at or above the threshold, consecutive ones merged into events.",
        epilog=DETECTIONS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    detections.add_argument("--label", required=True)
    detections.add_argument("--threshold", type=float, help="Score threshold (default: the classifier's F1-optimal one).")
    detections.add_argument("--format", choices=["raven", "csv", "parquet"], default="raven")
    detections.add_argument("--output", required=True, help="Folder to write into.")
    detections.add_argument("--merge-gap", type=float, default=0.0,
                            help="Windows starting at most this many seconds after an event ends join it. Default: 0.")
    detections.add_argument("--combined", action="store_true",
                            help="Raven: one table over all files (Begin File, File Offset (s)) instead of one per file.")
    detections.add_argument("--classifier", help="A classifier id (default: the label's latest).")
    workspace_argument(detections)
    declare(detections, Command(cmd_detections, needs_workspace=True))

    suggest = commands.add_parser(
        "suggest", help="Windows to label next: near the threshold, diverse, spread over recordings.",
        epilog=SUGGEST_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    suggest.add_argument("--label", required=True)
    suggest.add_argument("-k", type=int, default=50, help="Windows to suggest. Default: 50.")
    suggest.add_argument("--threshold", type=float, help="Default: the classifier's F1-optimal threshold.")
    suggest.add_argument("--output", default=None, help="CSV to write (default: suggest-<label>.csv).")
    suggest.add_argument("--seed", type=int, default=0)
    suggest.add_argument("--for-density", action="store_true",
                         help="Instead: k windows at random, spread evenly over the score bins, for the report's "
                              "calibrated call density.")
    workspace_argument(suggest)
    declare(suggest, Command(cmd_suggest, needs_workspace=True))


def _workspace(args):
    from tasks.workspace import Workspace

    return Workspace.at(getattr(args, "workspace", None))


def cmd_label(args: argparse.Namespace) -> int:
    import sys

    from tasks.detection.labels_io import import_annotations, import_similar
    from tasks.ingest.labels import LabelsError

    if not args.files and not args.from_similar:
        raise LabelsError("give annotation FILE(s), or --from-similar SEGMENT_ID --label NAME")
    results = [(file, import_annotations(_workspace(args), Path(file), args.label, args.label_column, args.recording))
               for file in args.files]
    if args.from_similar:
        results.append((f"similar to {args.from_similar}", import_similar(
            _workspace(args), args.from_similar, args.k, args.label, args.layer, args.model, args.negative)))
    for name, result in results:
        for problem in result.problems:
            print(f"warning: {problem}", file=sys.stderr)
        counts = ", ".join(f"{label} {'+' if positive else '-'} {n}" for (label, positive), n in sorted(result.counts.items()))
        print(f"{name} ({result.kind}): {result.stored} annotations stored ({counts or 'none'}), "
              f"{len(result.problems)} rows skipped")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from flows.classify import classify
    from flows.cli.console import print_table
    from schemas.settings import ClassifySettings

    settings = ClassifySettings(**{k: v for k, v in vars(args).items() if k in ClassifySettings.model_fields})
    result = classify(settings)
    print(f"features: {result.features} ({result.why}); validation holds out whole {result.split_by}s")
    columns = ["label", "classifier", "pos", "neg", "ROC-AUC [95% CI]", "AP [95% CI]", "F1-opt threshold", "scored"]
    print_table(columns, [[r["label"], r["classifier_id"], r["positives"], r["negatives"], r["roc_auc"],
                           r["average_precision"], r["threshold"], r["windows_scored"]] for r in result.classifiers])
    return 0


def cmd_detections(args: argparse.Namespace) -> int:
    from tasks.detection.events import detected_events, write_events
    from tasks.workspace import database

    with database.reading(_workspace(args)) as conn:
        record, threshold, events = detected_events(conn, args.label, args.threshold, args.merge_gap, args.classifier)
        paths = write_events(conn, events, args.format, Path(args.output), args.label, args.combined)
    print(f"{len(events)} '{args.label}' events (classifier {record['classifier_id']}, threshold {threshold:.3f}, "
          f"{sum(e.windows for e in events)} windows) in {len(paths)} file(s) under {args.output}")
    for path in paths[:10]:
        print(f"  {path}")
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from flows.cli.console import print_table
    from tasks.detection.events import classifier_for
    from tasks.detection.suggest import density_sample, suggest, write_suggestions
    from tasks.workspace import database

    workspace = _workspace(args)
    with database.reading(workspace) as conn:
        record = classifier_for(conn, args.label, None)
        threshold = record["threshold"] if args.threshold is None else args.threshold
        picks = (density_sample(conn, record, args.k, args.seed) if args.for_density
                 else suggest(conn, workspace, record, args.k, threshold, args.seed))
    path = write_suggestions(picks, args.label, Path(args.output or f"suggest-{args.label}.csv"))
    recordings = len({p.recording_id for p in picks})
    where = "at random in each score bin" if args.for_density else f"near threshold {threshold:.3f}"
    print(f"{len(picks)} windows from {recordings} recordings {where} -> {path}\n"
          f"fill its positive column with yes/no/skip, then: ceta2vec label {path}")
    print_table(["file", "start_s", "end_s", "score"],
                [[p.file_name, f"{p.start_s:.1f}", f"{p.end_s:.1f}", f"{p.score:.3f}"] for p in picks[:10]])
    return 0
