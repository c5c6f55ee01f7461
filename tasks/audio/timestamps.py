"""Recording start times from the file-name conventions of common recorders.

All times are UTC. A name that matches no convention has no start time (the user can give one
with --start-time); a pattern that matches but names an impossible date is ignored, not guessed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# Unix times this side of 2000-01-01 .. 2100-01-01; anything else in a name is not a time stamp.
_UNIX_MIN, _UNIX_MAX = 946684800, 4102444800

_ISO_COMPACT = re.compile(r"(?<!\d)(\d{8})T(\d{6})(?:\.(\d{1,6}))?(Z|[+-]\d{4})?(?!\d)")
_ISO_EXTENDED = re.compile(
    r"(?<!\d)(\d{4}-\d{2}-\d{2})[T_ ](\d{2})[:\-](\d{2})[:\-](\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?"
)
_SOUNDTRAP = re.compile(r"(?<![\d.])\d+\.(\d{12})(?=\.|$)")  # <serial>.YYMMDDhhmmss[.wav]
_AUDIOMOTH = re.compile(r"(?<!\d)(\d{8})_(\d{6})(?!\d)")  # YYYYMMDD_hhmmss
_UNIX = re.compile(r"(?<!\d)(\d{10})(?:\.(\d{1,6}))?(?!\d)")  # Orcasound: <node>_<unix seconds>


def _fraction(digits: str | None) -> timedelta:
    return timedelta(microseconds=int((digits or "0").ljust(6, "0")[:6]))


def _offset(text: str | None) -> timezone:
    if not text or text == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4])))


def _try(make) -> datetime | None:
    try:
        return make()
    except ValueError:
        return None


def parse_start_time(file_name: str) -> tuple[datetime | None, str | None]:
    """(UTC start time, convention name) parsed from a file name, or (None, None)."""
    stem = file_name.rsplit("/", 1)[-1]
    for match in _ISO_COMPACT.finditer(stem):
        when = _try(lambda: datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").replace(tzinfo=_offset(match[4])))
        if when:
            return (when + _fraction(match[3])).astimezone(timezone.utc), "iso8601"
    for match in _ISO_EXTENDED.finditer(stem):
        when = _try(
            lambda: datetime.strptime(f"{match[1]} {match[2]}{match[3]}{match[4]}", "%Y-%m-%d %H%M%S").replace(
                tzinfo=_offset(match[6])
            )
        )
        if when:
            return (when + _fraction(match[5])).astimezone(timezone.utc), "iso8601"
    match = _SOUNDTRAP.search(stem)
    if match:
        when = _try(lambda: datetime.strptime(match[1], "%y%m%d%H%M%S").replace(tzinfo=timezone.utc))
        if when:
            return when, "soundtrap"
    for match in _AUDIOMOTH.finditer(stem):
        when = _try(lambda: datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc))
        if when:
            return when, "audiomoth"
    for match in _UNIX.finditer(stem):
        seconds = int(match[1])
        if _UNIX_MIN <= seconds < _UNIX_MAX:
            return datetime.fromtimestamp(seconds, tz=timezone.utc) + _fraction(match[2]), "unix"
    return None, None
