"""What the pipeline tells its user: one row per stage, a markdown summary for the Prefect UI, and
a real segment to try `ceta2vec similar` on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class StageRow:
    stage: str
    outcome: str  # ran | nothing new | up to date | skipped
    detail: str
    link: str | None = None

    def as_row(self) -> dict:
        return {"stage": self.stage, "outcome": self.outcome, "detail": self.detail}


def example_segment(conn: duckdb.DuckDBPyConnection, model_id: str | None) -> str | None:
    """A segment with vectors in the model (loudest first, so the example is not silence)."""
    row = conn.execute(
        """SELECT s.segment_id FROM segments s
           WHERE s.segment_id IN (SELECT segment_id FROM embedded_segments WHERE model_id = ?)
           ORDER BY s.is_silent, s.rms_dbfs DESC, s.segment_id LIMIT 1""", [model_id]).fetchone()
    return row[0] if row else None


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def pipeline_markdown(summary: dict, stages: list[StageRow]) -> str:
    lines = [f"# Pipeline: {summary['workspace']}", "", "| stage | outcome | detail |", "|---|---|---|"]
    for s in stages:
        detail = f"[{_cell(s.detail)}]({Path(s.link).resolve().as_uri()})" if s.link else _cell(s.detail)
        lines.append(f"| {s.stage} | {s.outcome} | {detail} |")
    card = summary.get("scorecard")
    if card:
        lines += ["", f"**Best layer**: {card['best_layer']} ({card['metric']} {card['score']}; best baseline "
                      f"{card['best_baseline']}: {card['baseline_score']})."]
    for page in ("report", "explorer"):
        if summary.get(page):
            lines += ["", f"**{page.title()}**: [{summary[page]}]({Path(summary[page]).resolve().as_uri()})"]
    if summary.get("example_segment"):
        lines += ["", "Try next:", "", "```",
                  f"ceta2vec similar {summary['example_segment']} -k 5 --workspace {summary['workspace']}",
                  f"ceta2vec sql \"SELECT * FROM unit_stats ORDER BY frames DESC LIMIT 10\" --workspace {summary['workspace']}",
                  "```"]
    return "\n".join(lines) + "\n"
