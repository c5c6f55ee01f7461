"""What the README and the guides in docs/ name exists: every repository path, every `ceta2vec`
subcommand and option (asked of the real argparse parser, in this process), every option of a bench
script, every module attribute and test they cite, and every relative link with its anchor.

The README stays a front door: at most 15 KB.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import shlex
from pathlib import Path

import pytest

from flows.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 15 * 1024


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


# Folders a repository path starts with; anything else (`reports/<model>/`, `segments/`) is a
# workspace path or a URL, not a file of this repository.
PATH = re.compile(r"(?<![\w./<>@:-])((?:tasks|flows|schemas|deployments|bench|docs|tests|data|\.ci)/[\w./*-]*)"
                  r"(?:(::\w+)|: (\w+))?")
LONE_TEST = re.compile(r"`::(\w+)`")
DOTTED = re.compile(r"(?<![\w./-])((?:tasks|flows|schemas|deployments)(?:\.\w+)+)")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A command where a shell would run it: first on its line or in its span, perhaps after VAR=value.
COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*(?:\S*/)?ceta2vec[ \t]+(.+)")
SCRIPT = re.compile(r"(?<![\w/])((?:bench|docs)/\w+\.py)\b(.*)")
OPTION = re.compile(r"^\[?(--?[A-Za-z][\w-]*)")
SHELL_BREAKS = {"|", "||", "&&", ";", ">", "2>&1"}


@functools.cache
def cli() -> tuple[set[str], dict[str, set[str]]]:
    """The top-level options and each subcommand's options, from the parser `ceta2vec` runs."""
    parser = build_parser()
    top = {s for action in parser._actions for s in action.option_strings}
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return top, {name: {s for action in sub._actions for s in action.option_strings} | top
                 for name, sub in subcommands.items()}


@functools.cache
def script_options(script: str) -> set[str]:
    """The options a bench (or docs) script declares: its quoted '--option' literals."""
    return set(re.findall(r"""["'](--?[A-Za-z][\w-]*)["']""", (ROOT / script).read_text()))


@functools.cache
def every_option() -> set[str]:
    top, subcommands = cli()
    scripts = [p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("*.py")]
    return top.union(*subcommands.values(), *(script_options(s) for s in scripts))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    without_code = FENCE.sub("", text)
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", without_code, flags=re.M)}


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assigned names of a module (and methods, for `Class.method`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def logical_lines(block: str) -> list[str]:
    """A code block's commands: `\\`-continued lines joined, and usage lines that go on with `[--...`."""
    lines: list[str] = []
    for line in block.splitlines():
        stripped = line.strip()
        if lines and (lines[-1].endswith("\\") or stripped.startswith(("[", "--"))):
            lines[-1] = lines[-1].rstrip("\\") + " " + stripped
        else:
            lines.append(line)
    return lines


def tokens(command: str) -> list[str]:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: the plain words still say which options
        words = command.split("#")[0].split()
    for i, word in enumerate(words):
        if word in SHELL_BREAKS:
            return words[:i]
    return words


def options_in(words: list[str]) -> list[str]:
    return [m.group(1) for w in words if (m := OPTION.match(w.split("=")[0].rstrip("],)")))]


def command_problems(command: str) -> list[str]:
    top, subcommands = cli()
    words = tokens(command)
    while words and words[0].startswith("-"):
        if words[0] not in top:
            return [f"`ceta2vec {words[0]}`: no such option of ceta2vec"]
        words = words[1:]
    if not words:
        return []
    name, rest = words[0], words[1:]
    if name.endswith(":"):  # what ceta2vec prints (`ceta2vec ingest: error: ...`), not a command
        return []
    if re.fullmatch(r"[a-z][a-z0-9-]*", name):
        if name not in subcommands:
            return [f"`ceta2vec {name}`: no such command"]
        known = subcommands[name]
    else:  # a placeholder such as COMMAND or …
        name, known = "COMMAND", every_option()
    return [f"`ceta2vec {name} {option}`: no such option" for option in options_in(rest) if option not in known]


def code_commands(text: str) -> list[str]:
    """The text after `ceta2vec` of every command in a code span or a code block (not in SQL)."""
    found = []
    for language, block in FENCE.findall(text):
        if language.strip() != "sql":
            found += [m.group(1) for line in logical_lines(block) if (m := COMMAND.search(line))]
    found += [m.group(1) for span in SPAN.findall(FENCE.sub("", text)) if (m := COMMAND.search(span))]
    return found


def code_scripts(text: str) -> list[tuple[str, str]]:
    found = []
    for language, block in FENCE.findall(text):
        found += [(m.group(1), m.group(2)) for line in logical_lines(block) if (m := SCRIPT.search(line))]
    found += [(m.group(1), m.group(2)) for span in SPAN.findall(FENCE.sub("", text)) if (m := SCRIPT.search(span))]
    return found


def problems(text: str, source: Path) -> list[str]:
    """Everything `text` (a markdown file at `source`) names that does not exist."""
    found: list[str] = []
    where = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source

    # repository paths, with a test (`path::test`) or a name (`path.py: name`) after them
    last_file: Path | None = None
    items = sorted([(m.start(), "path", m) for m in PATH.finditer(text)] +
                   [(m.start(), "test", m) for m in LONE_TEST.finditer(text)], key=lambda item: item[0])
    for _, kind, match in items:
        if kind == "test":
            if last_file is None or match.group(1) not in defined_names(last_file):
                found.append(f"{where}: `::{match.group(1)}` is no test of {last_file}")
            continue
        path = match.group(1).rstrip(".")
        hits = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
        if not hits:
            found.append(f"{where}: `{path}` does not exist")
            continue
        if hits[0].suffix == ".py":
            last_file = hits[0]
        name = (match.group(2) or "").lstrip(":") or match.group(3)
        if name and hits[0].suffix == ".py" and name not in defined_names(hits[0]):
            found.append(f"{where}: `{path}` defines no `{name}`")

    # dotted names: tasks.model.health.training_health
    for dotted in {m.group(1) for m in DOTTED.finditer(text)}:
        parts = dotted.split(".")
        split = next((i for i in range(len(parts), 0, -1) if module_file(".".join(parts[:i]))), None)
        if split is None or len(parts) - split > 1:
            found.append(f"{where}: `{dotted}` is no module or module attribute")
        elif split < len(parts) and parts[split] not in defined_names(module_file(".".join(parts[:split]))):
            found.append(f"{where}: `{'.'.join(parts[:split])}` defines no `{parts[split]}`")

    # commands and options
    for command in code_commands(text):
        found += [f"{where}: {p}" for p in command_problems(command)]
    for script, rest in code_scripts(text):
        if (ROOT / script).is_file():
            found += [f"{where}: `{script} {o}`: no such option" for o in options_in(tokens(rest))
                      if o not in script_options(script)]
    _, subcommands = cli()
    for span in SPAN.findall(FENCE.sub("", text)):
        words = tokens(span)
        if words and words[0].startswith("--"):  # an option on its own: of some command or bench script
            found += [f"{where}: `{o}` is an option of no ceta2vec command or bench script"
                      for o in options_in(words) if o not in every_option()]
        elif len(words) > 1 and words[0] in subcommands and words[1].startswith("-"):  # `similar --hnsw`
            found += [f"{where}: {p}" for p in command_problems(span)]

    # relative links and their anchors
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in anchors(text):
                found.append(f"{where}: link `{target}`: no heading `#{anchor}` here")
            continue
        linked = (source.parent / file_part).resolve()
        if not linked.exists():
            found.append(f"{where}: link `{target}` leads nowhere")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            found.append(f"{where}: link `{target}`: no heading `#{anchor}` there")
    return found


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_everything_a_doc_names_exists(doc):
    found = problems(doc.read_text(), doc)
    assert not found, "\n".join(found)


def test_the_readme_is_a_front_door():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT} and move detail to docs/"


def test_the_guides_exist_and_the_readme_links_each():
    guides = {"ingest", "pretrain", "embed", "search-and-sql", "evaluate", "report", "pipeline", "scale-out",
              "guarantees", "architecture", "performance", "experiments/learning"}
    linked = {t.removeprefix("docs/").removesuffix(".md").split("#")[0] for t in LINK.findall(README.read_text())}
    assert guides <= linked, f"README.md links no {sorted(guides - linked)}"


def test_the_checks_find_what_does_not_exist():
    """Each kind of mistake, in a doc that is never written, is reported; its correct twin is not."""
    doc = ROOT / "docs" / "probe.md"
    wrong = """
Paths: `tasks/nowhere.py`, `bench/missing.py`, `tasks/model/health.py: no_such_verdict`,
`tests/test_cli.py::test_that_does_not_exist`, `tasks.model.health.no_such_name`, `tasks.nope.thing`.

```bash
ceta2vec frobnicate --workspace ws
ceta2vec ingest data/sample --no-such-option 3 \\
    --workspace ws
ceta2vec pretrain --preset tiny
                  [--grad-accumulate G]
.venv/bin/python bench/learning.py --no-such-bench-option
```

`ceta2vec embed --frame-type float16`, `similar --fuzzy`, `--nowhere-option 5`, `ceta2vec --verbose status`.
[a link](missing.md), [an anchor](ingest.md#no-such-heading), [here](#no-heading-here).
"""
    found = problems(wrong, doc)
    for expected in ("`tasks/nowhere.py` does not exist", "`bench/missing.py` does not exist",
                     "defines no `no_such_verdict`", "defines no `test_that_does_not_exist`",
                     "defines no `no_such_name`", "`tasks.nope.thing`",
                     "`ceta2vec frobnicate`: no such command", "`ceta2vec ingest --no-such-option`",
                     "`ceta2vec pretrain --grad-accumulate`", "`bench/learning.py --no-such-bench-option`",
                     "`ceta2vec embed --frame-type`", "`ceta2vec similar --fuzzy`", "`--nowhere-option`",
                     "`ceta2vec --verbose`", "link `missing.md` leads nowhere",
                     "link `ingest.md#no-such-heading`", "link `#no-heading-here`: no heading"):
        assert any(expected in line for line in found), f"not reported: {expected}\n" + "\n".join(found)
    assert len(found) == 17, "\n".join(found)

    right = """
Paths: `tasks/model/health.py: training_health`, `tests/test_cli.py::test_exit_status_contract`,
`tasks.model.health.interval_means`, `tests/test_hardening_*.py`, `flows/` and `data/sample/labels.csv`.

```bash
ceta2vec ingest data/sample --labels data/sample/labels.csv --site sample \\
    --workspace ws    # a comment with --not-an-option
ceta2vec pretrain [--preset tiny|small|base] [--run NAME]
                  [--grad-accum G]
.venv/bin/python bench/learning.py --corpus shared
```

`ceta2vec embed --no-frame-vectors`, `similar --hnsw`, `--frame-points 5000`, `ceta2vec --debug COMMAND --help`,
`ceta2vec ingest: error: unknown option '--worksapce'; did you mean '--workspace'?` (what it prints).
[a guide](ingest.md#re-runs-kills-and-bad-files), [the top](#paths).

# Paths
"""
    assert problems(right, doc) == []


def test_the_floors_in_architecture_md_are_the_floors_test_layers_enforces():
    from test_layers import FLOORS  # the one written order; docs/architecture.md draws it

    text = (ROOT / "docs" / "architecture.md").read_text()
    drawn = {int(n): set(rest.split()) for n, rest in re.findall(r"^floor (\d+)\s+(.+)$", text, flags=re.M)}
    assert sorted(drawn) == list(range(len(FLOORS))), f"architecture.md draws floors {sorted(drawn)}"
    every_package = {p for floor in FLOORS for p in floor}
    for number, packages in enumerate(FLOORS):
        assert drawn[number] & every_package == set(packages), (
            f"floor {number}: architecture.md draws {sorted(drawn[number] & every_package)}, "
            f"tests/test_layers.py has {sorted(packages)}")
        rows = re.findall(rf"^\| {number} \| `tasks/(\w+)/` \|", text, flags=re.M)
        assert set(rows) == set(packages), f"floor {number}: the table lists {rows}, not {sorted(packages)}"
