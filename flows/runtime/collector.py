"""Python's garbage collector around a flow command: what the imports build is never walked again.

Importing a flow's modules (torch, transformers, Prefect, scikit-learn) builds millions of objects
that live until the process exits. Each full collection walks all of them again, and the
interpreter walks them once more on its way out. On a busy 2-core machine `ceta2vec embed` (600 s
of audio, `tiny`) spent 2.5-5.8 s of CPU in 1,376 collections and took 2.4-3.5 s to exit after
its last line of work (bench/embed.py, docs/performance.md). So: no collections while the flow's
modules import (they make almost no garbage), then everything alive is frozen (`gc.freeze`: moved
where no collection looks), and frozen again at exit. Objects made by the run itself are collected
as usual. The memory is handed back to the system when the process exits, as it was before.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _freeze_at_exit() -> None:
    """Registered before the flow's imports, so that it runs after their exit handlers (Prefect's
    log and event workers send what they still hold first)."""
    gc.freeze()


@contextmanager
def imports_kept() -> Iterator[Callable[[], None]]:
    """Pause collections for the block's imports; the yielded function, called once they are done,
    freezes what they built and resumes collections. The collector is as it was when the block ends."""
    was_enabled = gc.isenabled()
    atexit.unregister(_freeze_at_exit)  # once per process, however many commands run in it
    atexit.register(_freeze_at_exit)
    gc.disable()
    imported = False

    def done() -> None:
        nonlocal imported
        if not imported:
            imported = True
            gc.freeze()
            if was_enabled:
                gc.enable()

    try:
        yield done
    finally:
        # a caller that runs several commands in one process (the tests) collects their garbage again
        gc.unfreeze()
        if was_enabled:
            gc.enable()
