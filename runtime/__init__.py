"""lamsc.runtime: backends, transmitter and receiver over a real link, latency and energy profiling.

This stage is being built (issue: an edge runtime over a real link); it exports nothing yet.
"""

__all__: list[str] = []
