"""lamsc.runtime: a deployment running: backends over a bundle, the link between two processes, latency
and energy per transmitted image.

backends.py    ONNX Runtime and TensorRT over a bundle (lamsc.semcom.backend's interface), open_backend
deployment.py  a picklable description of what an endpoint runs: bundle or checkpoint, backend, SKB
skb.py         SAM's mask generator on the exported SKB graphs
link.py        transmitter and receiver as two processes over TCP, the channel acting on each frame
latency.py     per-stage latency (median, p90, p99)
energy/        energy meters: Zeus (NVML, RAPL, Jetson rails), tegrastats, jetson-stats, a declared model
radio.py       radio presets (Wi-Fi, LTE, NB-IoT, LoRa): airtime and energy per bit or channel use
devices.py     device profiles (Jetsons, a server CPU) with their sources
profiler.py    profile_link(ProfileConfig) -> ProfileResult: latency and energy per image beside JPEG
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "OnnxRuntimeBackend": "backends", "TensorRTBackend": "backends", "open_backend": "backends",
    "ProfileConfig": "profiler", "ProfileResult": "profiler", "profile_link": "profiler",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
