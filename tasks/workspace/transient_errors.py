"""Which failures are worth a retry: the ones a moment's wait can cure (a lock held by another
process, a network file system hiccup), never the ones that would fail the same way again (a bad
file, a diverged model, a bug)."""

from __future__ import annotations

import errno

import duckdb

# I/O errors of busy or flaky storage; a missing file or a permission problem is not among them.
TRANSIENT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.EIO, errno.ENETDOWN,
    errno.ENETUNREACH, errno.ENETRESET, errno.ECONNABORTED, errno.ECONNRESET, errno.ECONNREFUSED,
    errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENOLCK, errno.EDEADLK,
})


def is_transient(exc: BaseException | None, timeouts: bool = True) -> bool:
    """True for a DuckDB lock held past the wait, a timeout (when `timeouts`), a dropped
    connection, or an OS error of busy/flaky storage; explicit causes (`raise ... from`) count too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) and (
                "lock" in str(exc).lower() or "different configuration" in str(exc)):
            return True
        if isinstance(exc, TimeoutError):
            return timeouts
        if isinstance(exc, ConnectionError):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        exc = exc.__cause__
    return False
