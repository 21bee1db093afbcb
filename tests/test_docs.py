"""The docs cannot rot: the CLI reference is generated, and every `botaclip ...` example in README.md and docs/
parses against the current commands and options; every Python example compiles."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click
import pytest

from botaclip.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _blocks(lang: str):
    for path in DOCS:
        for match in FENCE.finditer(path.read_text()):
            if match.group(1) == lang:
                yield path, match.group(2)


def _command_lines():
    """(file, argv) of every botaclip call in bash blocks; quoted strings may span lines."""
    for path, block in _blocks("bash"):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending += line + "\n"
            try:
                tokens = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the statement continues on the next line
                continue
            pending = ""
            statement: list[str] = []
            for token in tokens + ["&&"]:
                if token in {"&&", "||", ";", "|"}:
                    if statement and statement[0] in {"botaclip", ".venv/bin/botaclip"}:
                        yield path, statement
                    statement = []
                else:
                    statement.append(token)


def _parse(args: list[str]) -> None:
    """Resolve sub-commands and parse options without running anything (as click would before invoking)."""
    command: click.Command = cli
    ctx = command.make_context("botaclip", list(args), resilient_parsing=False)
    while isinstance(command, click.Group) and (remaining := [*ctx._protected_args, *ctx.args]):
        name, *rest = remaining
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        command = sub
        ctx = command.make_context(name, rest, parent=ctx)


def test_cli_reference_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from gen_cli import render
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run: .venv/bin/python docs/gen_cli.py > docs/cli.md"


@pytest.mark.parametrize("path,argv", list(_command_lines()),
                         ids=lambda v: v.name if isinstance(v, Path) else " ".join(v[:3]))
def test_command_examples_parse(path, argv):
    line = " ".join(argv)
    # Placeholders such as STORE or FILE stand for the user's paths; parsing never opens them.
    try:
        _parse(argv[1:])
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        pytest.fail(f"{path.name}: `{line}` does not parse: {exc.format_message()}")


@pytest.mark.parametrize("path,block", list(_blocks("python")), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_python_examples_compile_and_import(path, block):
    """Every Python example compiles and every botaclip name it imports exists."""
    import ast
    import importlib

    tree = ast.parse(compile(block, str(path), "exec", ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("botaclip"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{path.name}: {node.module} has no {alias.name}"


def test_readme_python_example_runs(capsys):
    """The README's self-contained Python example runs as written (random-init DOFA-small, CPU)."""
    (block,) = [b for p, b in _blocks("python") if p.name == "README.md"]
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
    assert "(8, 384) random-init:seed=0" in capsys.readouterr().out


def test_there_are_examples():
    assert len(list(_command_lines())) >= 10
