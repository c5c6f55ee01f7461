"""Names made from what users type (sites, run names, label columns, model names): one rule each
for folder and file names, SQL identifiers and Prefect artifact keys, so the same text always
becomes the same name wherever it is used."""

from __future__ import annotations

import re


def slug(text: str | None, joiner: str = "-", keep: str = "A-Za-z0-9._-", strip: str = "-.",
         lower: bool = False, fallback: str = "") -> str:
    """`text` with every run of characters outside `keep` replaced by `joiner`."""
    cleaned = re.sub(f"[^{keep}]+", joiner, (text or "").lower() if lower else (text or "")).strip(strip)
    return cleaned or fallback


def file_name(text: str | None, fallback: str = "unknown") -> str:
    """A folder or file name safe on every file system and in a Hive partition path."""
    return slug(text, fallback=fallback)


def file_stem(text: str) -> str:
    """A file name that keeps its readable text (`evaluate-call_type`), runs of others as `_`."""
    return slug(text, joiner="_", strip="")


def sql_identifier(text: str) -> str:
    """Lower-case letters, digits and `_`: safe unquoted in SQL (`tiny@3` → `tiny_3`)."""
    return "".join(c if c.isalnum() else "_" for c in text.lower())


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lower-case letters, digits and dashes) from its parts."""
    return "".join(c if c.isalnum() else "-" for c in "-".join(parts).lower())


def html_id(text: str) -> str:
    """An HTML id / URL fragment."""
    return slug(text, keep="a-z0-9_-", lower=True, strip="-", fallback="x")
