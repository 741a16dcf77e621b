"""The subcommands of ``lamsc``, one module each; ``lamsc.cli`` registers them."""

__all__: list[str] = []
