import subprocess
import sys

from botaclip import __version__
from botaclip.cli import cli


def test_help_lists_every_command_with_a_description(cli_runner):
    result = cli_runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name, command in cli.commands.items():
        line = next(line for line in result.output.splitlines() if line.strip().startswith(name + " "))
        assert command.get_short_help_str().split()[0] in line


def test_version(cli_runner):
    result = cli_runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "botaclip.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_make_test_is_what_ci_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make test" in (root / "README.md").read_text()
    assert "make demo" in (root / "README.md").read_text()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botaclip.cli", *args], capture_output=True, text=True)


def test_usage_errors_are_one_line_with_a_hint():
    for args, expected in [
        (["sample", "make", "--out", "x", "--size-km", "abc"], "--size-km"),
        (["index", "--bogus"], "--bogus"),
        (["nosuch"], "nosuch"),
    ]:
        out = _run(*args)
        assert out.returncode == 2, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], out.stderr
        assert "--help" in lines[0] and "Traceback" not in out.stderr


def test_bare_group_prints_its_help():
    out = _run("store")
    assert out.returncode == 0 and out.stdout.startswith("Usage: botaclip store")
