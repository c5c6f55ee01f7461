"""What the pipeline tells its user: one row per stage, a markdown summary for the Prefect UI, and
a real segment to try `ceta2vec similar` on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.results import EmbedResult, IngestResult, PipelineResult, PretrainResult


@dataclass(frozen=True)
class StageRow:
    stage: str
    outcome: str  # ran | nothing new | up to date | skipped
    detail: str
    link: str | None = None

    def as_row(self) -> dict:
        return {"stage": self.stage, "outcome": self.outcome, "detail": self.detail}


def ingest_row(ingested: IngestResult) -> StageRow:
    return StageRow(
        "ingest", "ran" if ingested.ingested or ingested.failed else "nothing new",
        f"{ingested.ingested} ingested, {ingested.skipped} unchanged, {ingested.duplicates} duplicates, "
        f"{ingested.failed} failed; {ingested.segments_added} segments added, "
        f"{ingested.workspace_summary['segments']} in the workspace")


def pretrain_row(trained: PretrainResult) -> StageRow:
    last = trained.summaries[-1] if trained.summaries else None
    return StageRow(
        "pretrain", "ran" if trained.chunks_trained else "nothing new",
        f"run {trained.run}: {trained.chunks_trained} chunk(s) trained, {trained.chunks_done} done"
        + (f"; last chunk mean loss {last['mean_loss']}, accuracy {last['accuracy']}" if last else ""))


def embed_row(embedded: EmbedResult) -> StageRow:
    return StageRow(
        "embed", "ran" if embedded.segments_embedded else "nothing new",
        f"model {embedded.model_id}: {embedded.segments_embedded} segment(s) embedded, "
        f"{embedded.segments_in_model} in the model, {len(embedded.layers)} layers of {embedded.dim} dimensions")


def evaluate_row(outcome: str, label_column: str, scorecard: dict | None) -> StageRow:
    detail = (f"'{label_column}' on {scorecard['segments']} segments / {scorecard['recordings']} "
              f"recordings: best layer {scorecard['best_layer']} ({scorecard['metric']} {scorecard['score']}); "
              f"best baseline {scorecard['best_baseline']} {scorecard['baseline_score']}") if scorecard else \
        f"'{label_column}': no layer could be scored"
    return StageRow("evaluate", outcome, detail)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def pipeline_markdown(summary: PipelineResult, stages: list[StageRow]) -> str:
    lines = [f"# Pipeline: {summary.workspace}", "", "| stage | outcome | detail |", "|---|---|---|"]
    for s in stages:
        detail = f"[{_cell(s.detail)}]({Path(s.link).resolve().as_uri()})" if s.link else _cell(s.detail)
        lines.append(f"| {s.stage} | {s.outcome} | {detail} |")
    card = summary.scorecard
    if card:
        lines += ["", f"**Best layer**: {card['best_layer']} ({card['metric']} {card['score']}; best baseline "
                      f"{card['best_baseline']}: {card['baseline_score']})."]
    for page, path in (("report", summary.report), ("explorer", summary.explorer)):
        if path:
            lines += ["", f"**{page.title()}**: [{path}]({Path(path).resolve().as_uri()})"]
    if summary.example_segment:
        lines += ["", "Try next:", "", "```",
                  f"ceta2vec similar {summary.example_segment} -k 5 --workspace {summary.workspace}",
                  f"ceta2vec sql \"SELECT * FROM unit_stats ORDER BY frames DESC LIMIT 10\" --workspace {summary.workspace}",
                  "```"]
    return "\n".join(lines) + "\n"
