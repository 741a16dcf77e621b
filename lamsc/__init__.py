"""lamsc: large-AI-model-based semantic communication of images, made to run on the edge.

Stages, one subpackage each: ``lamsc.semcom`` (the model: what happens to one image),
``lamsc.compress``, ``lamsc.export``, ``lamsc.runtime`` and ``lamsc.kernels``.
The ``lamsc`` command lives in ``lamsc.cli``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from lamsc.errors import UserError

try:
    __version__ = _version("lamsc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["UserError", "__version__"]
