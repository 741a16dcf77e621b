"""Federated split fine-tuning of a lamsc model on Flower (arXiv 2503.22064; SplitFed, Thapa et al. 2022).

Devices keep their photographs; each runs the front of the model (ASI, encoder with low-rank adapters, ASC)
and the server the back (channel, decoder, task heads). Per step, activations go up and gradients come down;
after each round the devices' adapters are averaged (FedAvg). Flower (``lamsc[fl]``) is needed only to run.

- ``federate(FederateConfig(data=[...], rounds=20))``: the Flower simulation; writes a lamsc model and a report.
- ``run_baselines(BaselineConfig(...))``: no fine-tuning, local-only, centralised and full-model FedAvg.
- ``lamsc.federated.split``: split points and what each side computes; ``adapters``, ``aggregation``,
  ``partition``, ``device``, ``server``, ``apps`` (the Flower ClientApp and ServerApp), ``report``.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "FederateConfig": "simulation", "FederateResult": "simulation", "federate": "simulation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
