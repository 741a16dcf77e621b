"""The ``lamsc`` command: one subcommand per user job, each a plain function in lamsc.commands."""

from __future__ import annotations

import contextlib
import logging
import sys
import types
import typing

import typer
from rich.console import Console
from rich.markup import escape

from lamsc import __version__
from lamsc.commands.compress import compress
from lamsc.commands.demo import demo
from lamsc.commands.density import density
from lamsc.commands.export import export
from lamsc.commands.kb import kb
from lamsc.commands.federate import federate
from lamsc.commands.output import console, json_only_stdout
from lamsc.commands.profile import profile
from lamsc.commands.segment import segment
from lamsc.commands.train import train
from lamsc.commands.transmit import transmit
from lamsc.errors import UserError

try:  # typer 0.29 and later vendor click and raise their own usage errors
    from typer import TyperException as UsageFailure
except ImportError:  # earlier typers, which Flower (lamsc[fl]) pins below 0.21, raise click's
    from click import ClickException as UsageFailure

app = typer.Typer(
    name="lamsc",
    help="Large-AI-model-based semantic communication of images, compressed and run on the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(segment)
app.command()(train)
app.command()(transmit)
app.command()(compress)
app.command()(export)
app.command()(profile)
app.command()(demo)
app.add_typer(kb, name="kb")
app.add_typer(density, name="density")
app.command()(federate)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lamsc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Large-AI-model-based semantic communication of images, compressed and run on the edge."""


class _Notes(logging.Handler):
    """lamsc's notes (an image's bit depth converted, a checkpoint wrapper removed) and warnings (pixels
    without data), one line each on stderr beside the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tag = "[yellow]warning:[/]" if record.levelno >= logging.WARNING else "note:"
        console.print(f"{tag} {escape(record.getMessage())}", soft_wrap=True)


def _show_notes() -> None:
    logger = logging.getLogger("lamsc")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes())
    logger.setLevel(logging.INFO)


def _plain_metavars(command) -> None:
    """typer labels each parameter in --help with its Python type (``<bool>`` on an on/off flag and on --help,
    ``<list[Path]>``): flags get no label, list parameters their item's (``PATH...``)."""
    subs = [command, *getattr(command, "commands", {}).values()]
    for sub in subs[1:]:  # a group's own subcommands (lamsc kb build ...)
        subs += getattr(sub, "commands", {}).values()
    for sub in subs:
        for param in sub.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.param_type_name == "option" and param.multiple and not param.metavar:  # keep one given
                param.metavar = f"{_item_type(param).upper()}..."
            elif param.param_type_name == "argument" and param.nargs != 1:
                param.display_type_rich = lambda ctx, label=f"{_item_type(param).upper()}...": label

        def help_option(ctx, make=sub.get_help_option):
            option = make(ctx)
            if option is not None:
                option.metavar = ""
            return option

        sub.get_help_option = help_option


def _item_type(param) -> str:
    """The name of a list parameter's item type ("path" for list[Path], Optional or not)."""
    if not hasattr(param, "type_descriptor"):  # typer before 0.29 keeps click's parameter type, not the annotation
        return param.type.name
    annotation = param.type_descriptor.annotation
    while typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return getattr(annotation, "__name__", "value")


def main(argv: list[str] | None = None) -> int:
    """Run ``lamsc`` with ``argv`` (default: the process arguments); return the exit status.

    A UserError is printed as one line, without a traceback, and gives status 2; notes and warnings from
    the ``lamsc`` loggers are printed as ``note: ...`` / ``warning: ...`` lines on stderr.
    """
    _show_notes()
    command = typer.main.get_command(app)
    _plain_metavars(command)
    args = sys.argv[1:] if argv is None else argv
    try:
        with json_only_stdout() if "--json" in args else contextlib.nullcontext():
            result = command.main(args=args, prog_name="lamsc", standalone_mode=False)
    except UserError as e:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    except UsageFailure as e:  # typer's usage errors: a missing argument, an unknown option
        if hasattr(e, "show"):
            e.show()
        else:
            typer.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except typer.Abort:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
