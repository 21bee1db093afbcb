"""Assertions on CLI results shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from botaclip.cli import cli


def one_line_error(cli_runner, args, match: str) -> str:
    """The command fails with exactly one `error:` line holding `match`, and no traceback; returns that line."""
    r = cli_runner.invoke(cli, args)
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr
    assert "Traceback" not in r.output + r.stderr
    return lines[0]
