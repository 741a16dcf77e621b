"""Package namespaces whose names load on first use: importing a stage (``lamsc.semcom``, ``lamsc.runtime``...)
imports none of its modules, so a deployment without torch can use the modules that do not need it."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` (its ``__name__``), where ``exports`` maps each public
    name to the module of the package that defines it (``{"Channel": "channels"}``). A module of the package
    resolves as an attribute too (``lamsc.runtime.backends`` after ``import lamsc``)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        try:
            return import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise  # the module exists and lacks a dependency: say which
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
