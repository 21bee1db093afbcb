"""The `botaclip` command line: parses arguments, calls the library, prints. No logic of its own.

Each area's commands live in `botaclip/commands/<area>.py` and are registered on the root group here.
"""

from __future__ import annotations

import functools
import sys
import warnings

import click

from botaclip import __version__
from botaclip.errors import BotaclipError, Interrupted, is_interrupt, option_spelling, root_cause


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _warning_line(default, message, category, filename, lineno, line=None) -> str:
    """botaclip's own warnings (a remote raster read inefficiently) as one line; others as Python shows them."""
    if category.__module__.startswith("botaclip."):
        return f"warning: {_one_line(str(message))}\n"
    return default(message, category, filename, lineno, line)


class _Root(click.Group):
    """Turns library errors and usage errors into one line on stderr and a non-zero exit, never a traceback."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False  # handle click's own errors here, as one line like ours
        shown = warnings.formatwarning
        warnings.formatwarning = functools.partial(_warning_line, shown)
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
                click.echo(exc.ctx.get_help())
                sys.exit(0)
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        finally:
            warnings.formatwarning = shown
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as exc:  # Ctrl-C that a command turned into what was kept and what to do
            click.echo(str(exc), err=True)
            ctx.exit(exc.exit_code)
        except BotaclipError as exc:
            # The library names Python parameters; here they are spelt as the options of the command that ran.
            spelling = getattr(exc, "spelling", {})
            click.echo(f"error: {exc.render(lambda name: spelling.get(name) or option_spelling(name))}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, RuntimeError) as exc:  # DuckDB reports Ctrl-C as "Query interrupted"
            if not is_interrupt(exc):
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except OSError as exc:  # the environment refused (permissions, a full disk): say so, no traceback
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {root_cause(exc)}{where}", err=True)
            ctx.exit(2)

    # Commands load on first use (see botaclip/commands/__init__.py): a run imports only its own module.
    @property
    def commands(self) -> dict[str, click.Command]:
        """Every command, loaded (what help pages and tests walk)."""
        for name in list(getattr(self, "_pending", {})):
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value) -> None:
        self._loaded = dict(value or {})

    def _load(self, name: str) -> click.Command | None:
        import importlib

        if name in getattr(self, "_pending", {}):
            module, attr = self._pending.pop(name)
            command = getattr(importlib.import_module(module), attr)
            _spell_errors_as_options(command)
            self._loaded[name] = command
        return self._loaded.get(name)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Keep --help in pipeline order rather than alphabetical.
        return list(getattr(self, "_order", [])) or list(self._loaded)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="botaclip")
def cli() -> None:
    """botaclip: botany-aware embeddings of aerial imagery, an H3 feature store, and species distribution models.

    Typical flow: `botaclip sample make` (or your own orthophotos) -> `botaclip index` -> `botaclip sql` /
    `botaclip store ...` -> `botaclip sdm fit|compare`.
    """


def _spelling(parameter: click.Parameter) -> str:
    if isinstance(parameter, click.Option):
        return max(parameter.opts, key=len)
    return parameter.human_readable_name


def _spell_errors_as_options(command: click.Command) -> None:
    """Errors raised under ``command`` learn how its options are spelt (``block_res`` -> ``--block-res``)."""
    if getattr(command, "_spelled", False):
        return
    command._spelled = True
    spelling = {p.name: _spelling(p) for p in command.params if p.name}
    callback = command.callback
    if callback is not None:
        @functools.wraps(callback)
        def spelled(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except BotaclipError as exc:
                exc.spelling = spelling
                raise

        command.callback = spelled
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _spell_errors_as_options(sub)
        get_command = command.get_command  # a group may load subcommands on first use (see commands/store.py)

        def get_spelled(ctx: click.Context, name: str):
            sub = get_command(ctx, name)
            if sub is not None:
                _spell_errors_as_options(sub)
            return sub

        command.get_command = get_spelled


def _register() -> None:
    from botaclip.commands import COMMANDS

    cli._pending = dict(COMMANDS)
    cli._order = list(COMMANDS)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="botaclip")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
