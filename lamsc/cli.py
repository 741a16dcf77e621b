"""The ``lamsc`` command: one subcommand per user job, each a plain function in lamsc.commands."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import logging
import sys
import types
import typing
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from lamsc import __version__
from lamsc.allocator import keep_freed_memory
from lamsc.commands.output import console, json_only_stdout
from lamsc.errors import UserError

try:  # typer 0.29 and later vendor click and raise their own usage errors
    from typer import TyperException as UsageFailure
except ImportError:  # earlier typers, which Flower (lamsc[fl]) pins below 0.21, raise click's
    from click import ClickException as UsageFailure

# click 8.2 and later suggest close command names for a typo themselves; typer's suggestion would repeat them
_CLICK_SUGGESTS = hasattr(getattr(getattr(typer.core, "click", None), "exceptions", None), "NoSuchCommand")

app = typer.Typer(
    name="lamsc",
    suggest_commands=not _CLICK_SUGGESTS,
    help="Large-AI-model-based semantic communication of images, compressed and run on the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = ("segment", "train", "transmit", "compress", "export", "profile", "demo", "kb", "density", "federate")
# The modules each extra brings (pyproject.toml): a command whose code needs one this install lacks is listed
# all the same, and says what to install when run.
EXTRA_MODULES = {
    "edge": ("onnxruntime", "onnx", "skimage", "tifffile", "scipy", "matplotlib", "zeus"),
    "full": ("torch", "torchvision", "segment_anything", "mobile_sam", "timm", "cv2", "sionna", "torch_pruning",
             "faiss"),
}


def _register(name: str) -> None:
    try:
        command = getattr(importlib.import_module(f"lamsc.commands.{name}"), name)
    except ModuleNotFoundError as e:
        extra = next((x for x, mods in EXTRA_MODULES.items() if (e.name or "").split(".")[0] in mods), None)
        if extra is None:
            raise
        _register_missing(name, e.name, extra)
        return
    if isinstance(command, typer.Typer):
        app.add_typer(command, name=name)
    else:
        app.command()(command)


def _register_missing(name: str, module: str, extra: str) -> None:
    """``lamsc NAME`` where NAME's code needs ``module`` of ``extra``, which this install lacks: one line saying so."""
    what = "the full toolkit" if extra == "full" else "the deployment runtime"
    fix = f"`lamsc {name}` needs {what} ({module} is not installed here): pip install 'lamsc[{extra}]'"

    @app.command(name, help=escape(f"Not in this install: {fix}."), add_help_option=False,
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def missing(ctx: typer.Context) -> None:
        raise UserError(fix)


_registered: set[str] = set()
_listed: dict[str, typer.models.CommandInfo] = {}  # commands shown in the root's help by their summary alone


def _register_for(args: list[str]) -> None:
    """Register the command ``args`` names, none for ``--version``, else list every one for the root's help: a run
    imports its own command's code only, so ``lamsc transmit`` does not load the compression stack."""
    at = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    named, root_options = (args[at] if at < len(args) else None), args[:at]  # the root's come before a command
    if named in COMMANDS and "--help" not in root_options and "--version" not in root_options:
        if named in _listed:
            app.registered_commands.remove(_listed.pop(named))
        if named not in _registered:
            _register(named)
            _registered.add(named)
    elif "--version" not in root_options:
        try:
            has_torch = importlib.util.find_spec("torch") is not None
        except ImportError:  # a finder that refuses the name outright
            has_torch = False
        for name in COMMANDS:
            if name not in _registered and name not in _listed:
                _list(name, has_torch)


def _list(name: str, has_torch: bool) -> None:
    """Show command ``name`` in the root's help. Where torch is installed its summary is read from the source:
    importing every command would load torch and take seconds. Where it is not, the command is imported, which is
    quick and says which commands this install lacks."""
    if not has_torch:
        _register(name)
        _registered.add(name)
        return
    app.command(name, help=command_summary(name))(lambda: None)  # never run: naming it registers the real one
    _listed[name] = app.registered_commands[-1]


def command_summary(name: str) -> str:
    """The help of ``lamsc NAME``, read from lamsc/commands/NAME.py without importing it: a function's docstring,
    or the ``help`` of a ``typer.Typer`` group. LookupError where the module defines neither."""
    tree = ast.parse((Path(__file__).parent / "commands" / f"{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_docstring(node) or ""
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)):
            return next(ast.literal_eval(k.value) for k in node.value.keywords if k.arg == "help")
    raise LookupError(f"lamsc/commands/{name}.py defines no command {name!r}")


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
    if argv is None:  # the console command owns its process: large activations are reused, not re-faulted
        keep_freed_memory()
    args = sys.argv[1:] if argv is None else argv
    _register_for(args)
    command = typer.main.get_command(app)
    _plain_metavars(command)
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
