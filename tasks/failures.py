"""The one exception type a bad input file turns into."""

from __future__ import annotations


class IngestFailure(Exception):
    """A file that cannot be ingested: `stage` says where (discover, read, decode, validate,
    write), `reason` says what is wrong in words a user can act on."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
