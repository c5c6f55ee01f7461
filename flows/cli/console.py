"""What the CLI prints: summaries and tables for people (rich), nothing the flows depend on."""

from __future__ import annotations

import csv
import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.results import EvaluateResult, IngestResult, PipelineResult, PretrainResult
from schemas.tables import INGEST_RUN_STATUSES
from tasks.workspace import Workspace

# Output read by a program or saved to a file is never wrapped: rich would fold tables and paths at
# 80 columns (or at the width of a terminal on stderr), and a folded row parses as two.
PIPED_WIDTH = 10_000
console = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def _cell(value, width: int = 60) -> Text:
    """A table cell as plain Text: file names and labels are never read as rich markup."""
    if isinstance(value, (list, tuple)) and len(value) > 8:
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:4])
        return Text(f"[{head}, … ({len(value)} values)]")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    text = "NULL" if value is None else str(value)
    return Text(text if len(text) <= width else text[: width - 1] + "…")


def print_table(columns: list[str], rows: list[tuple], max_rows: int = 200, title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows[:max_rows]:
        table.add_row(*[_cell(v) for v in row])
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"… {len(rows) - max_rows} more rows (use --max-rows, or --format csv)", markup=False)
    console.print(f"{len(rows)} row(s)", style="dim", markup=False)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def print_ingest_result(result: IngestResult) -> None:
    table = Table(title="ingest run " + result.run_id, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("files_seen", "ingested", "skipped", "duplicates", "failed", "warnings", "segments_added"):
        table.add_row(key.replace("_", " "), str(getattr(result, key)))
    table.add_row("audio added", f"{result.audio_seconds_added / 3600:.3f} h")
    table.add_row("bytes stored", _human_bytes(result.bytes_added))
    if result.bytes_per_audio_hour:
        table.add_row("bytes per audio hour", _human_bytes(result.bytes_per_audio_hour))
    console.print(table)
    if result.failures:
        failures = Table(title="files that could not be ingested (also in table ingest_errors)")
        for column in ("path", "stage", "reason"):
            failures.add_column(column, overflow="fold")
        for path, stage, reason in result.failures[:50]:
            failures.add_row(Text(path), Text(stage), Text(reason))
        console.print(failures)
    root = Workspace.at(result.workspace)
    console.print(f"workspace: {root.root}", markup=False, highlight=False)
    console.print(f"  DuckDB:   {root.db_path}", markup=False, highlight=False)
    console.print(f"  Parquet:  {root.storage.root}/site=*/date=*/rec-*.parquet", markup=False, highlight=False)
    console.print(
        f'next: ceta2vec status --workspace {root.root}\n'
        f'      ceta2vec sql "SELECT site, count(*), sum(duration_s)/3600 AS hours FROM recordings GROUP BY site" '
        f"--workspace {root.root}",
        markup=False, highlight=False,
    )


def print_pretrain_result(result: PretrainResult) -> None:
    console.print(result.frontend, markup=False, highlight=False)
    if result.summaries:
        columns = [c for c in result.summaries[0] if c not in ("checkpoint", "health_sentence")]
        print_table(columns, [tuple(s[c] for c in columns) for s in result.summaries], title=f"run {result.run}")
        for summary in result.summaries:  # is it learning? said plainly, chunk by chunk
            if summary.get("health_sentence"):
                console.print(summary["health_sentence"], markup=False, highlight=False)
    else:
        console.print(f"run {result.run}: nothing to do ({result.chunks_done} chunks done); "
                      "raise --chunks to continue it", markup=False, highlight=False)
    console.print(f"checkpoints: {result.run_dir}", markup=False, highlight=False)


def print_status(status: dict, fmt: str = "table") -> None:
    """`ceta2vec status`: tables for people, the same fields as JSON, or as CSV rows of
    (section, key, field, value), one per value (the sections hold different columns)."""
    if fmt == "json":
        print(json.dumps(status, indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["section", "key", "field", "value"])
        writer.writerows(_status_rows(status))
    else:
        _print_status_tables(status)


STATUS_SECTIONS = (("sites", "site", "site"), ("runs", "run", "run"), ("models", "model", "model_id"),
                   ("recent_errors", "error", "path"))


def _status_rows(status: dict):
    def flat(prefix: str, values: dict):
        for field, value in values.items():
            if isinstance(value, dict):
                yield from flat(f"{prefix}{field}.", value)
            else:
                yield f"{prefix}{field}", json.dumps(value) if isinstance(value, list) else value

    listed = {name for name, _, _ in STATUS_SECTIONS}
    yield from (("workspace", "", field, value)
                for field, value in flat("", {k: v for k, v in status.items() if k not in listed}))
    for name, section, key in STATUS_SECTIONS:
        for row in status[name]:
            yield from ((section, row[key], field, value) for field, value in flat("", row) if field != key)


def _list(values: list) -> str:
    return ", ".join(map(str, values))


def verdict_words(evaluation: dict | None) -> str:
    """A stored scorecard in words: its best layer against its best baseline."""
    if not evaluation:
        return "not evaluated"
    titles = dict(SCORECARD_COLUMNS)
    metric = titles.get(evaluation["metric"], evaluation["metric"])
    if evaluation["best_baseline"] is None:
        return f"layer {evaluation['best_layer']}: {metric} {evaluation['score']:.3f} (no baseline scored)"
    return (f"layer {evaluation['best_layer']} {'is above' if evaluation['beats_baselines'] else 'does not beat'} "
            f"{evaluation['best_baseline']} ({metric} {evaluation['score']:.3f} vs {evaluation['baseline_score']:.3f})")


def _print_status_tables(status: dict) -> None:
    console.print(f"workspace {status['workspace']}", markup=False, highlight=False)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("recordings", str(status["recordings"]))
    table.add_row("hours of recordings", f"{status['recording_hours']:.3f}")
    table.add_row("sites", str(len(status["sites"])))
    table.add_row("segments", str(status["segments"]))
    table.add_row("  flagged silent", str(status["silent_segments"]))
    table.add_row("  with NaN/Inf samples", str(status["nonfinite_segments"]))
    table.add_row("labelled recordings", str(status["labelled_recordings"]))
    table.add_row("duplicate files skipped", str(status["duplicates"]))
    table.add_row("files with errors", str(status["errors"]))
    runs = status["ingest_runs"]
    if runs["latest"]:
        table.add_row("ingest runs", ", ".join(f"{runs[state]} {state}" for state in INGEST_RUN_STATUSES
                                               if runs[state]))
        table.add_row("latest ingest", f"{runs['latest']['status']}, started {runs['latest']['started_at'][:19]}")
    table.add_row("warnings", str(status["warnings"]))
    table.add_row("stored (Parquet)", _human_bytes(status["stored_bytes"]))
    table.add_row("bytes per audio hour", _human_bytes(status["bytes_per_audio_hour"]))
    config = status["config"]
    if "sample_rate" in config:
        table.add_row(
            "dataset", f"{config['sample_rate']} Hz, {config['segment_seconds']} s segments, "
            f"hop {config['hop_seconds']} s, final segment: {config['final_segment']}",
        )
    console.print(table)
    if status["sites"]:
        columns = ["site", "recordings", "hours", "segments", "first_start", "last_start"]
        print_table(["site", "recordings", "hours", "segments", "first start", "last start"],
                    [tuple(s[c] for c in columns) for s in status["sites"]], title="by site")
    if status["runs"]:
        print_table(list(status["runs"][0]),
                    [tuple(_list(v) if isinstance(v, list) else v for v in r.values()) for r in status["runs"]],
                    title="pretraining runs (table models) and their kept checkpoints")
    if status["models"]:
        rows = [(m["model_id"], m["segments"], _list(m["layers"]),
                 f"k={m['units_k']} on {_list(m['kmeans_layers'])}" if m["kmeans_layers"] else "none",
                 f"'{m['evaluation']['label_column']}'" if m["evaluation"] else "none", verdict_words(m["evaluation"]),
                 "index.html" if m["report"] else "none")
                for m in status["models"]]
        print_table(["model", "segments", "layers", "k-means units", "evaluated on", "verdict", "report"], rows,
                    title="embedded models (checkpoints)")
        for m in status["models"]:  # whole paths, never cut: they are copied and pasted
            shown = m["report"] or f"none yet (ceta2vec report --model {m['model_id']})"
            console.print(f"report of {m['model_id']}: {shown}", markup=False, highlight=False, soft_wrap=True)
    if status["recent_errors"]:
        print_table(["path", "stage", "reason"], [tuple(e.values()) for e in status["recent_errors"]],
                    title="recent errors (table ingest_errors)")


SCORECARD_COLUMNS = (("knn1_accuracy", "1-NN acc"), ("knn5_macro_f1", "5-NN F1"), ("probe_macro_f1", "probe F1"),
                     ("precision_at_1", "P@1"), ("mean_average_precision", "mAP"), ("cluster_nmi", "NMI"),
                     ("cluster_ari", "ARI"), ("roc_auc", "ROC-AUC"), ("unit_purity", "purity"), ("unit_pnmi", "PNMI"))


def _score(value: tuple[float, float, float] | None, with_ci: bool) -> str:
    if value is None or value[0] != value[0]:
        return ""
    text = f"{value[0]:.3f}"
    if with_ci and value[1] == value[1]:
        text += f" [{value[1]:.2f}–{value[2]:.2f}]"
    return text


def print_scorecard(result: EvaluateResult) -> None:
    console.print(f"'{result.label_column}': {result.segments} segments from {result.recordings} recordings "
                  f"({result.ambiguous} with two values left out)", markup=False, highlight=False)
    counts = ", ".join(f"{k}: {v['segments']} seg / {v['recordings']} rec" for k, v in result.class_counts.items())
    console.print(f"classes: {counts}", markup=False, highlight=False)
    for model_id, model in result.models.items():
        rows = [r for r in model.rows if not r["features"].startswith("random weights layer")]
        used = [(m, title) for m, title in SCORECARD_COLUMNS if any(m in r["metrics"] for r in rows)]
        table = [tuple([r["features"] if r["kind"] == "model" else f"baseline: {r['features']}"]
                       + [_score(r["metrics"].get(m), m in ("knn5_macro_f1", "probe_macro_f1")) for m, _ in used])
                 for r in rows]
        print_table(["features"] + [title for _, title in used], table, title=f"{model_id} (95% intervals over recordings)")
        console.print(f"best layer (5-NN macro-F1): {model.best_layer}; figure: {model.figure[0]}",
                      markup=False, highlight=False)
        # The answer in words, beside every baseline: a model that loses says so here, not only in a table.
        from tasks.report.verdict import scorecard_statements

        segments = {k: v["segments"] for k, v in result.class_counts.items()}
        for sentence in scorecard_statements(model.rows, result.label_column, segments)[1]:
            console.print(f"verdict: {sentence}", markup=False, highlight=False)


def print_pipeline_result(result: PipelineResult, program: str = "ceta2vec") -> None:
    """What each stage did, where the report is, and two commands to try next (with a real segment)."""
    table = Table(title=f"pipeline: {result.workspace}")
    for column in ("stage", "outcome", "detail"):
        table.add_column(column, overflow="fold")
    for s in result.stages:
        table.add_row(Text(s["stage"]), Text(s["outcome"]), Text(s["detail"]))
    console.print(table)
    ws = result.workspace
    lines = [f"report:   {result.report}", f"explorer: {result.explorer}"] if result.report else []
    card = result.scorecard
    if card and card.get("best_baseline"):  # the answer in one line, whichever way it goes
        beaten = card["score"] > card["baseline_score"]
        lines.insert(0, f"verdict:  {result.model_id} layer {card['best_layer']} "
                        f"{'is above' if beaten else 'does not beat'} {card['best_baseline']} "
                        f"({card['metric']} {card['score']:.3f} vs {card['baseline_score']:.3f}"
                        f"{'; see the report for intervals' if beaten else ''})")
    lines.append("next:")
    if result.example_segment:
        lines.append(f"  {program} similar {result.example_segment} -k 5 --workspace {ws}")
    lines.append(f'  {program} sql "SELECT unit, frames, segments, round(mean_run_s, 3) AS mean_run_s FROM unit_stats '
                 f"WHERE model_id = '{result.model_id}' AND source = 'kmeans' AND layer = 1 ORDER BY frames DESC "
                 f'LIMIT 10" --workspace {ws}')
    for line in lines:  # never wrapped: the commands must survive copy and paste
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def quiet_tracebacks() -> None:
    """Prefect's console lines without the tracebacks it attaches to a failed task or flow run:
    the CLI ends with one line that says what went wrong (`--debug` keeps them). Only the console
    is quieted; the records themselves, and what the API handler sends to the UI, keep theirs."""
    import logging

    import prefect.main  # noqa: F401 - sets Prefect's logging up now, so that the handlers patched are the ones used
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in {h for logger in loggers for h in getattr(logger, "handlers", [])}:
        if isinstance(handler, PrefectConsoleHandler) and not getattr(handler, "_ceta2vec_quiet", False):
            handler.format = _without_traceback(handler.format)
            handler._ceta2vec_quiet = True


def _without_traceback(format_record):
    def format(record):
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return format_record(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
    return format
