"""File permissions for what lamsc writes."""

from __future__ import annotations

import os
from pathlib import Path


def honour_umask(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets under the process's umask (0644 under the
    usual 022). safetensors' ``save_file`` creates its files readable by their owner alone (0600), which
    keeps a model or density from the other users of a shared install."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
