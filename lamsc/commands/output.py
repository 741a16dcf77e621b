"""What every command shares: a console for humans (stderr), JSON for machines (stdout)."""

from __future__ import annotations

import contextlib
import json
import math
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lamsc.semcom.metrics import strict_json

# The help of every command's IMAGES argument (lamsc.semcom.images.iter_images reads them).
IMAGES_HELP = "Image files, image folders, VOC-layout folders, or bundled photographs by name (chelsea)."

# Humans read stderr, so that --json leaves stdout to the machine-readable document alone.
console = Console(stderr=True, highlight=False)


def progress() -> Progress:
    """A progress bar on stderr while a terminal shows it; off when stderr is a file or a pipe, where rich
    would leave a blank line behind for each bar."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def print_table(table, width: int = 100) -> None:
    """A result table on stdout, at least ``width`` columns wide even when piped, where rich would assume 80
    and cut numbers short."""
    Console(width=max(Console().width, width)).print(table)


_json_stream = None  # the real stdout while ``json_only_stdout`` holds


@contextlib.contextmanager
def json_only_stdout():
    """Send whatever else prints to stdout (NNCF's progress bars, for one) to stderr, so that stdout holds
    the JSON document alone."""
    global _json_stream
    _json_stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stream = None


def emit_json(name: str, results: dict) -> None:
    """Write ``{"name": ..., "results": ...}`` to stdout, as strict JSON (see ``strict_json``)."""
    out = _json_stream or sys.stdout
    json.dump(strict_json({"name": name, "results": results}), out, indent=2, allow_nan=False)
    out.write("\n")


def number(value: float, spec: str) -> str:
    """``value`` formatted by ``spec`` for a table, or "n/a" where it is undefined (NaN)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
