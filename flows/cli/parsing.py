"""argparse with the CLI's own errors: one line each, no usage dump, and the nearest name suggested
for a mistyped command, option or choice (difflib)."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

EXIT_USAGE = 2


def _nearest(word: str, names) -> str | None:
    close = difflib.get_close_matches(word, [str(n) for n in names], n=1, cutoff=0.6)
    return close[0] if close else None


def _suggestion(word: str, names) -> str:
    near = _nearest(word, names)
    return f"; did you mean '{near}'?" if near else ""


class CommandParser(argparse.ArgumentParser):
    """The parser of `ceta2vec` and of each of its subcommands (argparse makes them of the same class).

    argparse prints a usage of up to 30 lines before the one that says what was wrong: here that
    one line is all, and `--help` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is None or value in action.choices:
            return
        if isinstance(action, argparse._SubParsersAction):
            hint = _suggestion(value, action.choices) or f" (commands: {', '.join(action.choices)})"
            raise argparse.ArgumentError(None, f"unknown command '{value}'{hint}")
        choices = ", ".join(f"'{c}'" for c in action.choices)
        raise argparse.ArgumentError(action, f"invalid choice '{value}' (choose from {choices})"
                                     f"{_suggestion(value, action.choices)}")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._subcommand_parser(parsed)
            parser.error(_unknown(extras, parser))
        return parsed

    def _subcommand_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser of the subcommand given (whose options an unknown one is compared with), else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
                if chosen is not None:
                    return chosen
        return self


def _unknown(extras: list[str], parser: argparse.ArgumentParser) -> str:
    first = extras[0]
    if not first.startswith("-") or first == "-":
        return f"unexpected argument '{first}'"
    name = first.split("=", 1)[0]
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    return f"unknown option '{name}'{_suggestion(name, options)}"
