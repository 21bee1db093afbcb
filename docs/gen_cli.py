"""Writes docs/cli.md from the commands' own --help, so the reference cannot drift from the code.

    .venv/bin/python docs/gen_cli.py > docs/cli.md

tests/test_docs.py fails when docs/cli.md is out of date.
"""

from __future__ import annotations

import click

from botaclip.cli import cli

HEADER = """# Command-line reference

Generated from `botaclip --help` by `docs/gen_cli.py`; do not edit by hand. Every command answers bad input with
one line starting `error:` on stderr and a non-zero exit code.
"""


def _walk(ctx: click.Context, path: list[str]):
    """Contexts chained as when the command runs, so inherited settings (e.g. `-h`) show as users see them."""
    yield path, ctx
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            yield from _walk(click.Context(sub, info_name=name, parent=ctx), path + [name])


def render() -> str:
    parts = [HEADER]
    root = click.Context(cli, info_name="botaclip", terminal_width=100, max_content_width=100, **cli.context_settings)
    for path, ctx in _walk(root, ["botaclip"]):
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"{level} `{' '.join(path)}`\n\n```text\n{ctx.command.get_help(ctx).rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
