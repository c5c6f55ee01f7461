"""Progress of long flow work, shown twice: a tqdm bar on the terminal (the CLI) and a Prefect
progress artifact (the UI), the artifact updated at most every `every_s` seconds so a fast loop
does not flood the API. Also the table-artifact helpers the flows share."""

from __future__ import annotations

import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm.auto import tqdm


class Progress:
    """`with Progress(total, "segment", "embed", "tiny@3: segments embedded") as p: p.advance(n)`."""

    def __init__(self, total: float, unit: str, desc: str, description: str, every_s: float = 2.0,
                 bar_format: str | None = None):
        self.total, self.every_s = max(total, 1e-9), every_s
        self.artifact = create_progress_artifact(progress=0.0, description=description)
        self.bar = tqdm(total=total, unit=unit, desc=desc, disable=None, bar_format=bar_format)
        self._last = 0.0

    @property
    def done(self) -> float:
        return self.bar.n

    def advance(self, n: float = 1, **postfix) -> bool:
        """Count `n` more done; True when the artifact was updated (a moment to log, too)."""
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix(**postfix)
        return self._maybe_publish()

    def set(self, done: float) -> bool:
        self.bar.update(done - self.bar.n)
        return self._maybe_publish()

    def _maybe_publish(self) -> bool:
        if time.monotonic() - self._last < self.every_s and self.bar.n < self.total:
            return False
        update_progress_artifact(self.artifact, progress=100.0 * min(1.0, self.bar.n / self.total))
        self._last = time.monotonic()
        return True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.bar.close()
        if exc_type is None:
            update_progress_artifact(self.artifact, progress=100.0)


def readable(value):
    """Floats as a person reads them in a table artifact: two decimals, or three significant digits below 1."""
    if isinstance(value, float):
        return round(value, 2) if abs(value) >= 1 or value == 0 else float(f"{value:.3g}")
    return value
