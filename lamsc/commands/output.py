"""What every command shares: a console for humans (stderr), JSON for machines (stdout)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Humans read stderr, so that --json leaves stdout to the machine-readable document alone.
console = Console(stderr=True, highlight=False)


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def emit_json(name: str, results: dict) -> None:
    """Write ``{"name": ..., "results": ...}`` to stdout."""
    json.dump({"name": name, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")
