"""The declared power model: a datasheet power (lamsc.runtime.devices) x measured time. It measures
nothing, so its figures are labelled an estimate everywhere they appear."""

from __future__ import annotations


from lamsc.runtime.devices import device_profile
from lamsc.runtime.energy.meter import EnergyMeter


class ModelMeter(EnergyMeter):
    """Declared power x measured time, for machines without a counter. On ``cpu`` the declared power is per
    busy core, times ``cores``."""

    estimate = True
    min_window_s = 0.0  # power x time resolves any window

    def __init__(self, device: str = "cpu", cores: int = 1):
        profile = device_profile(device)
        per_core = device == "cpu"
        self.watts = profile.active_w * (cores if per_core else 1)
        what = (f"{cores} busy core{'s' * (cores != 1)} of a {profile.name} at {profile.active_w:g} W each" if per_core
                else profile.name)
        self.source = f"model estimate: {self.watts:g} W declared for {what} x measured time"

    def start(self):
        return None

    def stop(self, state, t0: float, t1: float) -> float:
        return self.watts * (t1 - t0)
