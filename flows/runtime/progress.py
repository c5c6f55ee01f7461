"""Progress of long flow work, shown twice from one count: a rich progress bar with an ETA on the
terminal (the CLI) and a Prefect progress artifact (the UI). The artifact is updated at most every
`every_s` seconds so a fast loop does not flood the API. Also the table-artifact helpers the flows share.

On a terminal, every stage open at once (ingest files, pretraining steps, embedded segments, the
report's figures) is a line of one live display; piped or redirected, no bar is drawn at all, so
logs and CI output hold no carriage returns or cursor codes.
"""

from __future__ import annotations

import threading
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


def stage_bars(console: Console) -> RichProgress:
    """A live display of stage bars: name, bar, done/total unit, percent, elapsed, ETA, last figures."""
    return RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
        TaskProgressColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        console=console, disable=not console.is_terminal, refresh_per_second=4,
    )


class _SharedDisplay:
    """One live display for the process (rich allows one at a time), started with its first bar and
    stopped with its last, so stages that overlap share it instead of fighting over the terminal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bars: RichProgress | None = None
        self._open = 0

    def acquire(self) -> RichProgress:
        with self._lock:
            if self._bars is None:
                self._bars = stage_bars(Console(stderr=True))
                self._bars.start()
            self._open += 1
            return self._bars

    def release(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0 and self._bars is not None:
                self._bars.stop()
                self._bars = None


_SHARED = _SharedDisplay()


class Progress:
    """`with Progress(total, "segment", "embed", "tiny@3: segments embedded") as p: p.advance(n)`.

    `console`: draw on this console instead of the shared one on stderr (tests, embedding)."""

    def __init__(self, total: float, unit: str, desc: str, description: str, every_s: float = 2.0,
                 console: Console | None = None):
        self.total, self.every_s = max(total, 1e-9), every_s
        self.artifact = create_progress_artifact(progress=0.0, description=description)
        self._own = console is not None
        self.bars = stage_bars(console) if self._own else _SHARED.acquire()
        if self._own:
            self.bars.start()
        self.task = self.bars.add_task(desc, total=total, unit=unit, postfix="")
        self._done, self._last, self._closed = 0.0, 0.0, False

    @property
    def done(self) -> float:
        return self._done

    @property
    def percent(self) -> float:
        """What the artifact shows once published: the bar's count as a percentage of the total."""
        return 100.0 * min(1.0, self._done / self.total)

    def advance(self, n: float = 1, **postfix) -> bool:
        """Count `n` more done; True when the artifact was updated (a moment to log, too)."""
        self._done += n
        fields = {"postfix": " ".join(f"{k} {v}" for k, v in postfix.items())} if postfix else {}
        self.bars.update(self.task, completed=self._done, **fields)
        return self._maybe_publish()

    def set(self, done: float) -> bool:
        return self.advance(done - self._done)

    def _maybe_publish(self) -> bool:
        if time.monotonic() - self._last < self.every_s and self._done < self.total:
            return False
        update_progress_artifact(self.artifact, progress=self.percent)
        self._last = time.monotonic()
        return True

    def close(self, completed: bool = True) -> None:
        """Done with this bar (it stays on screen, at its last count); a completed stage's artifact ends at 100%."""
        if self._closed:
            return
        self._closed = True
        if self._own:
            self.bars.stop()
        else:
            _SHARED.release()
        if completed:
            update_progress_artifact(self.artifact, progress=100.0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(completed=exc_type is None)


def readable(value):
    """Floats as a person reads them in a table artifact: two decimals, or three significant digits below 1."""
    if isinstance(value, float):
        return round(value, 2) if abs(value) >= 1 or value == 0 else float(f"{value:.3g}")
    return value
