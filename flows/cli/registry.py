"""The one registry of `ceta2vec`'s subcommands: each declares, beside its parser, what `main` needs
to know of it. Light on purpose: deployments and other plugins import it to declare theirs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Command:
    run: Callable[[argparse.Namespace], int]
    # (module, settings) of the flow it runs on a temporary Prefect server of its own: the settings are
    # checked before that server starts, and the module is imported while it starts.
    flow: tuple[str, type[BaseModel]] | None = None
    # Refused on a folder that holds no workspace before anything starts: a mistyped --workspace creates nothing.
    needs_workspace: bool = False
    # Runs flows (on its own server or the user's): Prefect's console lines lose their tracebacks.
    prefect: bool = False


def declare(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.set_defaults(command_spec=command)


def declared(args: argparse.Namespace) -> Command:
    return args.command_spec
