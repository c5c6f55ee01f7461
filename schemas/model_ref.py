"""Which model a vector, unit or score belongs to: one checkpoint of one pretraining run.

A pretraining *run* (table `models`, column `run`) keeps a checkpoint per chunk; embeddings,
units, indexes and evaluations belong to one checkpoint, named `run@chunk` in their `model_id`
column. This type is the only place that name is printed or parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = "@"


@dataclass(frozen=True, order=True)
class ModelRef:
    run: str
    chunk: int

    def __post_init__(self):
        if not self.run or self.chunk < 1:
            raise ValueError(f"a model is a run and a chunk ≥ 1, not {self.run!r} and {self.chunk}")

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`tiny@3` → ModelRef('tiny', 3); the last `@` splits, so a run name may hold one."""
        run, separator, chunk = text.strip().rpartition(SEPARATOR)
        if not separator or not run or not chunk.isdigit() or int(chunk) < 1:
            raise ValueError(f"'{text}' names no model: expected RUN{SEPARATOR}CHUNK, for example tiny{SEPARATOR}3")
        return cls(run, int(chunk))

    def __str__(self) -> str:
        return f"{self.run}{SEPARATOR}{self.chunk}"

    def __eq__(self, other: object) -> bool:
        """A reference equals another of the same run and chunk, and the `run@chunk` text that names it
        (a `model_id` column's value)."""
        if isinstance(other, ModelRef):
            return (self.run, self.chunk) == (other.run, other.chunk)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))  # equal to its text, so hashed as its text
