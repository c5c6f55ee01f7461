"""Cells of annotation files: the yes/no/skip of a positive or negative label (seconds are read as
labels CSVs read them, `tasks.ingest.labels.seconds`)."""

from __future__ import annotations

from tasks.ingest.labels import BadRow

# Columns that say whether a row is a positive or a negative example (a review's decision).
DECISION_COLUMNS = ("positive", "present", "decision")
YES = {"yes", "y", "true", "t", "1", "positive", "present", "+"}
NO = {"no", "n", "false", "f", "0", "negative", "absent", "-"}
SKIP = {"skip", "s", "?", "unsure"}


def decision(record: dict[str, str]) -> bool | None:
    """True (positive: also when the file has no decision column), False (negative), None (skipped)."""
    for column in DECISION_COLUMNS:
        if column in record:
            value = record[column].strip().lower()
            if value in YES:
                return True
            if value in NO:
                return False
            if value in SKIP or value == "":
                return None
            raise BadRow(f"{column} must be yes/no/skip (or true/false, 1/0), got {record[column]!r}")
    return True
