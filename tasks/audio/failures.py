"""The one exception type a bad input file turns into."""

from __future__ import annotations

import errno


class IngestFailure(Exception):
    """A file that cannot be ingested: `stage` says where (discover, read, decode, validate,
    write), `reason` says what is wrong in words a user can act on."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EFBIG: "file too large (the file system's or the process's file size limit)"}


def disk_full(exc: BaseException | None) -> str | None:
    """What ran out, when `exc` or what caused it is a write refused for want of space: not a bad
    input file, so not a file's failure but a stop for the whole run."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return _DISK_FULL[exc.errno]
        # DuckDB's errors, and Arrow's OSErrors, carry the errno only in their text.
        from_library = isinstance(exc, OSError) or type(exc).__module__.startswith(("duckdb", "_duckdb"))
        if from_library and not isinstance(exc, IngestFailure):
            text = str(exc).lower()
            for reason in _DISK_FULL.values():
                if reason.split(" (")[0] in text:
                    return reason
        exc = exc.__cause__ or exc.__context__
    return None
