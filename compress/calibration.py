"""The Jetson cost model, calibrated on published TensorRT latencies of networks like lamsc's.

Model (per image, batch 1, one network on a named device profile of lamsc.runtime.devices):

    latency = (layers x tau(board) + compute + traffic) x (h if the engine is hand-built else 1)
    compute = 2 x conv MACs / (peak(precision) x e(precision)) + 2 x matmul MACs / (peak(precision) x e(precision) x r)
    traffic = (activations + weights) x bytes(precision) / (DRAM bandwidth x m)
    tau(board) = tau0 x (5.32 TFLOPS / board fp32 peak) ** alpha

``e`` is how many times the listed peak TensorRT reaches on convolutions at each precision (above 1 where
the profile lists CUDA-core rates and TensorRT runs on tensor cores), ``r`` how much
better or worse matrix products (linear layers, attention) do than convolutions, ``m`` the fraction of DRAM
bandwidth the layers' activations and weights move at (what makes depthwise and high-resolution layers slow),
``tau`` the fixed cost of a layer (kernel launches, small-layer latency), larger on slower GPUs. ``h`` is how much
faster NVIDIA's MLPerf engines run than one TensorRT builds from the network's graph: those are assembled by hand
with fused plugins (BERT's fused multi-head attention, ResNet-50's fused residual stages), which a ``trtexec``
build of an ONNX graph, lamsc's own path, does not get; lamsc's estimates take h = 1. Eight parameters, fitted by
least squares on the log of the latencies in ``PUBLISHED`` (``fit``); ``leave_one_out`` refits without each row and
predicts it, the error every Jetson estimate prints beside itself. ``CALIBRATION`` holds the fitted values; a test
refits ``PUBLISHED`` and checks them.

The networks' work (``REFERENCE_WORK``) was counted with lamsc.compress.cost.count_work on their official
builders at the published resolution (torchvision's ResNets, MobileSAM's ``vit_t`` with its prompt encoder and
mask decoder, NanoSAM's ResNet-18 encoder as nanosam/models/timm_image_encoder.py builds it, Ultralytics 8.4's
yolo26*.yaml and yolov8n.yaml after fusing, mit-han-lab/efficientvit's cls, seg and sam builders, timm's CLIP
ViT-B/32 and B/16 at 768 with OWL-ViT's heads as nanoowl runs them, timm's ViT-tiny and MobileViT-S changed as
netspresso-trainer builds them) or in closed form (BERT-large); each total agrees with its source's published
MACs or with the closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamsc.runtime.devices import device_profile

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Work:
    """What a network does per image: multiply-accumulates by kind, and its layers (conv, linear)."""

    conv_macs: int = 0
    matmul_macs: int = 0
    layers: int = 0
    activations: int = 0  # elements read and written by the conv and linear layers

    @property
    def macs(self) -> int:
        return self.conv_macs + self.matmul_macs

    def __add__(self, other: Work) -> Work:
        return Work(self.conv_macs + other.conv_macs, self.matmul_macs + other.matmul_macs,
                    self.layers + other.layers, self.activations + other.activations)


REFERENCE_WORK = {  # network at its published input -> (work, parameters)
    "resnet18@224": (Work(1_813_561_344, 512_000, 21, 4_667_880), 11_689_512),
    "resnet50@224": (Work(4_087_136_256, 2_048_000, 54, 21_779_432), 25_557_032),
    "nanosam-encoder@1024": (Work(43_603_984_384, 0, 26, 104_857_600), 14_782_528),
    "mobilesam-encoder@1024": (Work(10_791_026_688, 27_977_268_736, 69, 426_531_840), 6_065_532),
    "yolo26n@640": (Work(2_678_713_600, 61_440_000, 102, 40_961_600), 2_408_932),
    "yolo26m@640": (Work(34_089_984_000, 122_880_000, 112, 160_244_800), 20_411_132),
    "yolo26x@640": (Work(96_932_505_600, 276_480_000, 166, 310_516_800), 55_725_948),
    "yolov8n@640": (Work(4_371_993_600, 0, 64, 35_649_600), 3_151_904),
    "efficientvit-cls-b1@224": (Work(506_627_072, 12_587_520, 76, 13_829_224), 9_102_024),
    "efficientvit-cls-b3@288": (Work(6_406_967_808, 123_418_624, 147, 83_180_520), 48_646_056),
    "efficientvit-seg-b1@512": (Work(3_045_851_136, 44_564_480, 86, 87_597_056), 4_791_414),
    "efficientvit-seg-l1@512": (Work(36_234_854_400, 103_809_024, 88, 185_327_616), 40_409_526),
    "efficientvit-seg-l2@512": (Work(45_036_863_488, 138_412_032, 112, 222_289_920), 51_462_454),
    "efficientvit-sam-l0-encoder@512": (Work(34_705_768_448, 69_206_016, 69, 158_400_512), 30_728_224),
    "efficientvit-sam-xl0-encoder@1024": (Work(184_493_015_040, 311_427_072, 79, 472_449_024), 112_893_344),
    # MobileSAM's encoder with its prompt encoder and mask decoder (one point, three masks)
    "mobilesam-pipeline@1024": (Work(11_193_679_872, 29_386_967_040, 118, 447_629_956), 10_130_092),
    # OWL-ViT's image encoder as nanoowl's engine holds it: CLIP ViT-B at 768 with its box and class heads
    "owlvit-b32-image-encoder@768": (Work(1_358_954_496, 56_052_467_712, 55, 91_131_264), 89_441_798),
    "owlvit-b16-image-encoder@768": (Work(1_358_954_496, 297_338_554_368, 55, 358_774_272), 88_999_430),
    # BERT-large with its SQuAD head at 384 tokens, in closed form (no builder here): matmul MACs
    # 24 (12 d^2 s + 2 s^2 d) + 2 d s, layers 24 x 6 + 1, activations 443,394 s, d = 1024; twice the MACs is
    # open_model_zoo's 246.93 GOps less its softmax, LayerNorm and GELU
    "bert-large-squad@384": (Work(0, 123_212_660_736, 145, 170_263_296), 302_311_426),
    # netspresso-trainer's ViT-tiny (17x17 patch convolution, separate q, k, v) and MobileViT-S, 3 classes
    "netspresso-vit-tiny@224": (Work(32_626_944, 1_224_590_400, 74, 8_358_339), 5_506_179),
    "netspresso-mobilevit-s@256": (Work(1_092_354_048, 907_839_360, 90, 34_364_035), 4_939_555),
}

_EFFICIENTVIT = ("github.com/mit-han-lab/efficientvit applications/efficientvit_{}/README.md "
                 "(TensorRT fp16, with data transfer)")
_NANOSAM = "github.com/NVIDIA-AI-IOT/nanosam README, Performance (image encoder, TensorRT)"
_NANOSAM_PIPELINE = "github.com/NVIDIA-AI-IOT/nanosam README, Performance (MobileSAM full pipeline, fp32 TensorRT)"
_MLPERF31 = "MLPerf Inference v3.1 closed, NVIDIA {}, {} SingleStream p90 (JetPack 5.1.1, TensorRT 8.5.2)"
_NETSPRESSO = "github.com/Nota-NetsPresso/netspresso-trainer docs/benchmarks/device_matrix/tensorrt.md ({})"
_ULTRALYTICS = "docs.ultralytics.com/guides/nvidia-jetson, YOLO26 TensorRT tables ({}, inference only)"
_NANOOWL = ("github.com/NVIDIA-AI-IOT/nanoowl README, Performance (AGX Orin FPS of owl_predict.py --profile, batch 1, "
            "fp16 image encoder engine; 1000/FPS is the whole predict call, which bounds the encoder's latency)")
_MLPERF_BERT = ("MLPerf Inference {} closed, NVIDIA {}, bert-99 SingleStream p99 ({}); p99, not p90: the harness runs "
                "each SQuAD window at its own length, and the flat tail above p97 is the 384-token windows")


@dataclass(frozen=True)
class Published:
    network: str      # a key of REFERENCE_WORK
    device: str       # a lamsc.runtime.devices profile
    precision: str
    ms: float
    source: str

    @property
    def hand_built(self) -> bool:
        """An MLPerf submission's engine (fused plugins written for it), not one built from the network's graph."""
        return self.source.startswith("MLPerf")


PUBLISHED = [
    Published("nanosam-encoder@1024", "agx-orin", "fp16", 4.2, _NANOSAM),
    Published("mobilesam-encoder@1024", "agx-orin", "fp32", 35.0, _NANOSAM),
    Published("resnet50@224", "agx-orin", "int8", 0.640, _MLPERF31.format("Orin_TRT", "resnet50")),
    Published("resnet50@224", "orin-nx", "int8", 1.082, _MLPERF31.format("Orin_NX_TRT", "resnet50")),
    Published("resnet50@224", "xavier-nx", "int8", 2.437,
              "MLPerf Inference v1.1 closed, NVIDIA Xavier_NX_TRT, resnet50 SingleStream p90 (JetPack 4.6)"),
    Published("resnet18@224", "agx-orin", "fp16", 0.520, _NETSPRESSO.format("JetPack 5.0.1, AGX Orin")),
    Published("resnet50@224", "agx-orin", "fp16", 1.142, _NETSPRESSO.format("JetPack 5.0.1, AGX Orin")),
    Published("resnet18@224", "orin-nano", "fp16", 1.998, _NETSPRESSO.format("JetPack 6.0, Orin Nano")),
    Published("resnet50@224", "orin-nano", "fp16", 4.802, _NETSPRESSO.format("JetPack 6.0, Orin Nano")),
    Published("resnet18@224", "xavier-nx", "fp16", 1.784, _NETSPRESSO.format("JetPack 4.6, Jetson NX")),
    Published("resnet50@224", "xavier-nx", "fp16", 4.169, _NETSPRESSO.format("JetPack 4.6, Jetson NX")),
    Published("efficientvit-cls-b1@224", "agx-orin", "fp16", 1.48, _EFFICIENTVIT.format("cls")),
    Published("efficientvit-cls-b3@288", "agx-orin", "fp16", 5.63, _EFFICIENTVIT.format("cls")),
    Published("efficientvit-seg-b1@512", "agx-orin", "fp16", 4.0, _EFFICIENTVIT.format("seg") + ", ADE20K"),
    Published("efficientvit-seg-l1@512", "agx-orin", "fp16", 7.2, _EFFICIENTVIT.format("seg") + ", ADE20K"),
    Published("efficientvit-seg-l2@512", "agx-orin", "fp16", 9.0, _EFFICIENTVIT.format("seg") + ", ADE20K"),
    # the SAM rows time the whole model; its prompt decoder adds under 1% of the encoder's MACs
    Published("efficientvit-sam-l0-encoder@512", "agx-orin", "fp16", 8.2, _EFFICIENTVIT.format("sam")),
    Published("efficientvit-sam-xl0-encoder@1024", "agx-orin", "fp16", 22.5, _EFFICIENTVIT.format("sam")),
    # AGX Orin's YOLO26n fp32 and fp16 rows are left out: their engines scored mAP 0.045 (broken builds).
    Published("yolo26n@640", "agx-orin", "int8", 2.30, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26m@640", "agx-orin", "fp32", 12.60, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26m@640", "agx-orin", "fp16", 6.24, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26m@640", "agx-orin", "int8", 4.72, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26x@640", "agx-orin", "fp32", 28.43, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26x@640", "agx-orin", "fp16", 13.50, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    Published("yolo26x@640", "agx-orin", "int8", 9.33, _ULTRALYTICS.format("AGX Orin 64GB, JetPack 6.2")),
    *[Published(f"yolo26{s}@640", "orin-nano-super", p, ms, _ULTRALYTICS.format("Orin Nano Super, JetPack 6.1"))
      for s, row in (("n", (7.53, 4.57, 3.80)), ("m", (28.19, 13.59, 9.30)), ("x", (67.17, 32.60, 19.99)))
      for p, ms in zip(PRECISIONS, row)],
    *[Published(f"yolo26{s}@640", "orin-nx", p, ms, _ULTRALYTICS.format("Orin NX 16GB"))
      for s, row in (("n", (7.01, 4.13, 3.49)), ("m", (24.69, 11.66, 8.22)), ("x", (57.18, 26.76, 17.32)))
      for p, ms in zip(PRECISIONS, row)],
    # matrix-product-heavy networks: attention and linear layers, the rest of what lamsc's SKB encoders run
    Published("mobilesam-pipeline@1024", "orin-nano", "fp32", 146.0, _NANOSAM_PIPELINE),
    Published("owlvit-b32-image-encoder@768", "agx-orin", "fp16", 10.53, _NANOOWL),
    Published("owlvit-b16-image-encoder@768", "agx-orin", "fp16", 40.0, _NANOOWL),
    Published("bert-large-squad@384", "agx-orin", "int8", 6.487,
              _MLPERF_BERT.format("v3.1", "Orin_TRT", "JetPack 5.1.1, TensorRT 8.5.2")),
    Published("bert-large-squad@384", "orin-nx", "int8", 16.809,
              _MLPERF_BERT.format("v3.1", "Orin_NX_TRT", "JetPack 5.1.1, TensorRT 8.5.2")),
    Published("bert-large-squad@384", "xavier-nx", "int8", 50.469,
              _MLPERF_BERT.format("v1.1", "Xavier_NX_TRT", "JetPack 4.6, TensorRT 8.0.1")),
    Published("netspresso-vit-tiny@224", "orin-nano", "fp16", 3.115, _NETSPRESSO.format("JetPack 6.0, Orin Nano")),
    Published("netspresso-mobilevit-s@256", "orin-nano", "fp16", 7.133, _NETSPRESSO.format("JetPack 6.0, Orin Nano")),
]

PARAMETERS = ("e_fp32", "e_fp16", "e_int8", "r_matmul", "m_memory", "tau0_ms", "alpha", "h_hand_built")
BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Calibration:
    """Fitted parameters (PARAMETERS order) and the leave-one-out relative errors on PUBLISHED."""

    values: tuple[float, ...]
    loo_median: float
    loo_p90: float
    rows: int

    def describe(self) -> str:
        return (f"error on {self.rows} published Jetson latencies, each left out of the fit: median "
                f"{self.loo_median:.0%}, 90th percentile {self.loo_p90:.0%}")


def predict_ms(values, work: Work, params: int, precision: str, device: str, hand_built: bool = False) -> float:
    """The cost model's latency (ms) of one image, with parameters ``values`` (PARAMETERS order), for an engine
    TensorRT builds from the network's graph (``hand_built``: one of NVIDIA's MLPerf engines)."""
    e = dict(zip(PRECISIONS, values[:3]))[precision]
    r, m, tau0, alpha, h = values[3:]
    p = device_profile(device)
    peak, bandwidth = p.peak_tflops(precision) * 1e12, p.memory_gbps * 1e9
    compute_s = 2 * work.conv_macs / (peak * e) + 2 * work.matmul_macs / (peak * e * r)
    traffic_s = (work.activations + params) * BYTES[precision] / (bandwidth * m)
    tau_ms = tau0 * (5.32 / p.fp32_tflops) ** alpha
    return (work.layers * tau_ms + (compute_s + traffic_s) * 1e3) * (h if hand_built else 1.0)


def predict_row(values, row: Published) -> float:
    """The cost model's latency (ms) of a published row."""
    return predict_ms(values, *REFERENCE_WORK[row.network], row.precision, row.device, row.hand_built)


def fit(rows: list[Published]) -> tuple[float, ...]:
    """Least squares on log latency; each parameter kept positive and below a bound no board reaches."""
    from scipy.optimize import least_squares

    def residuals(x):
        fitted = [np.log(predict_row(x, r) / r.ms) for r in rows]
        # a weak pull of r towards 1, so that it stays finite where no row is matmul-heavy
        return fitted + [0.1 * np.log(x[3])]

    start = np.array([0.3, 0.3, 0.3, 1.0, 0.5, 0.01, 1.0, 1.0])
    lower, upper = [1e-3] * 5 + [0.0, 0.0, 0.1], [10.0] * 5 + [1.0, 3.0, 10.0]
    return tuple(float(v) for v in least_squares(residuals, start, bounds=(lower, upper)).x)


def leave_one_out(rows: list[Published]) -> list[float]:
    """Relative error (predicted / published - 1) of each row from a fit on all the others."""
    errors = []
    for i, row in enumerate(rows):
        values = fit(rows[:i] + rows[i + 1:])
        errors.append(predict_row(values, row) / row.ms - 1)
    return errors


def calibrate(rows: list[Published] = PUBLISHED) -> Calibration:
    """Fit on every row and measure the leave-one-out error: what CALIBRATION records."""
    errors = np.abs(leave_one_out(rows))
    return Calibration(fit(rows), float(np.median(errors)), float(np.percentile(errors, 90)), len(rows))


# calibrate() on PUBLISHED, rounded; tests/test_compress.py refits and checks it
CALIBRATION = Calibration(values=(3.643, 7.522, 0.7250, 0.2503, 0.4271, 0.01347, 0.4679, 0.4698), loo_median=0.078,
                          loo_p90=0.284, rows=51)
