"""The `ceta2vec` command line: one sub-command per flow, mapped onto the same settings the Prefect UI shows."""

from flows.cli.commands import main

__all__ = ["main"]
