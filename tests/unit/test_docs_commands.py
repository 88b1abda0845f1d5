"""Every ``codealign …`` command line shown in README.md and docs/ names a command that exists
and only options that command has, and its ``--help`` runs; a complete line of a command that
has ``--plan`` (``sweep``) runs as shown with ``--plan`` added, so its values are checked too.  A
renamed command, option or preset breaks this test instead of a reader's first try."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from codealign.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
# `codealign`, `.venv/bin/codealign`, `python -m codealign`, after env assignments or a prompt
INVOCATION = re.compile(r"(?:^|[\s;&|(]|/)(?:python -m )?codealign(\s.*?)?(?=\s(?:\||&&|;|\|\|)\s|$)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def command_lines(text: str) -> list[str]:
    """The command lines of a markdown text: lines of fenced blocks (a trailing backslash or an
    indented next line continues one) and inline code spans."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        for raw in block.splitlines():
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + raw.strip()
            elif lines and raw.startswith((" ", "\t")) and raw.strip().startswith(("[", "--")):
                lines[-1] += " " + raw.strip()
            else:
                lines.append(raw.strip())
    prose = FENCE.sub("", text)
    lines += SPAN.findall(prose)
    return [line for line in lines if INVOCATION.search(line)]


def resolve(words: list[str]) -> tuple[list[str], Any] | None:
    """The command path (``["stack", "up"]``) the words start with, and its click command."""
    group = typer.main.get_command(app)
    path: list[str] = []
    command = group
    for word in words:  # (typer ships its own click: a group is what has subcommands)
        if word not in getattr(command, "commands", {}):
            break
        command = command.commands[word]
        path.append(word)
    return (path, command) if path else None


# A line with any of these is a synopsis or an excerpt, not a line to run as is.
TRAILING_COMMENT = re.compile(r"\s+#.*$")
PLACEHOLDER = re.compile(r"[\[\]<>{}…|]|\.\.\.|\b[A-Z][A-Z_]{2,}\b|\$")


def shown_commands() -> dict[tuple[str, ...], tuple[Any, set[str], list[str]]]:
    """Each command path shown in the docs: its command, the options shown with it, and where."""
    found: dict[tuple[str, ...], tuple[Any, set[str], list[str]]] = {}
    for doc in DOCS:
        for line in command_lines(doc.read_text(encoding="utf-8")):
            for match in INVOCATION.finditer(line):
                words = (match.group(1) or "").split()
                resolved = resolve(words)
                if resolved is None:
                    continue  # prose ("codealign sends …"), not a command line
                path, command = resolved
                _, options, where = found.setdefault(tuple(path), (command, set(), []))
                options.update(OPTION.findall(" ".join(words[len(path):])))
                where.append(f"{doc.relative_to(REPO)}: {line[:100]}")
    return found


SHOWN = shown_commands()


def plannable_lines() -> list[list[str]]:
    """The complete lines shown (no placeholder) of commands that have ``--plan``, as words."""
    lines: set[tuple[str, ...]] = set()
    for doc in DOCS:
        for line in command_lines(doc.read_text(encoding="utf-8")):
            for match in INVOCATION.finditer(TRAILING_COMMENT.sub("", line)):
                words = (match.group(1) or "").split()
                resolved = resolve(words)
                if resolved is None or PLACEHOLDER.search(" ".join(words)):
                    continue
                if any("--plan" in param.opts for param in resolved[1].params):
                    lines.add(tuple(words))
    return [list(words) for words in sorted(lines)]


PLANNABLE = plannable_lines()


def test_the_docs_show_the_main_commands():
    shown = {" ".join(path) for path in SHOWN}
    assert {"sweep", "evaluate", "train", "resume", "runs", "deploy", "stack up", "gc"} <= shown, shown


@pytest.mark.parametrize("path", sorted(SHOWN), ids=" ".join)
def test_every_option_shown_exists_and_help_runs(path):
    command, options, where = SHOWN[path]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    unknown = sorted(options - known)
    assert not unknown, f"codealign {' '.join(path)} has no option {', '.join(unknown)}; shown in:\n" + \
        "\n".join(where)
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_docs_show_sweep_lines_that_can_be_planned():
    assert ["sweep", "--preset", "toy"] in PLANNABLE, PLANNABLE


@pytest.mark.parametrize("words", PLANNABLE, ids=" ".join)
def test_every_complete_sweep_line_shown_plans(words, tmp_path):
    """The line as shown, planned (nothing runs): its preset, config and values are accepted."""
    args = [*words, "--plan"] + ([] if "--store" in words else ["--store", str(tmp_path / "store")])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"codealign {' '.join(args)}:\n{result.output}"
    if "--json" in words:
        assert json.loads(result.output)["pieces"], result.output
    else:
        assert "critical path" in result.output, result.output


def test_a_placeholder_line_is_not_run():
    assert PLACEHOLDER.search("sweep [--preset toy|paper-001] --config FILE.yaml")
    assert PLACEHOLDER.search("sweep … --submit http://head:8265")
    assert not PLACEHOLDER.search("sweep --preset paper-003 --run-id nightly-1")
    assert TRAILING_COMMENT.sub("", "codealign sweep --preset toy  # the main job") == "codealign sweep --preset toy"


def test_a_renamed_option_is_caught():
    """The check itself: a line with an option the command lacks is reported."""
    text = "```\ncodealign train --stage sft --no-such-option 3\n```\n"
    [line] = command_lines(text)
    path, command = resolve(line.split()[1:])
    known = {opt for param in command.params for opt in param.opts}
    assert path == ["train"] and "--stage" in known and "--no-such-option" not in known
