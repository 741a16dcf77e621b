"""ONNX export: each graph against PyTorch on real photographs, the bundle's integrity, the forms
TensorRT needs (symmetric int8 Q/DQ, no OneHot-fed Tile), and the TensorRT command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.nn import functional as F

from lamsc.errors import UserError
from lamsc.export.bundle import Int8Options, write_bundle
from lamsc.export.manifest import BundleError, load_bundle
from lamsc.export.graph_checks import count_qdq, onehot_shape_problems, qdq_problems, tensorrt_problems
from lamsc.semcom.graphs import skb_graphs
from lamsc.export.onnx_export import compare, export_onnx
from lamsc.export.samples import SNR_POINTS, skb_samples
from lamsc.export.tensorrt import build_engine, shape_profile, trtexec_command
from lamsc.semcom.asi import adaptive_avg_pool
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.entropy import load_entropy_model
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model

PHOTOS = ("chelsea", "coffee")


# the module's fixtures are built once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("export")


@pytest.fixture(scope="module")
def photos():
    return bundled_photos(PHOTOS)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, model, photos):
    return write_bundle(model, tmp_path_factory.mktemp("b") / "fp32", "fp32", images=photos)


@pytest.mark.parametrize("shape", [(2, 3, 256, 320), (1, 8, 37, 100), (1, 1, 64, 64), (1, 2, 500, 333)])
def test_adaptive_pool_as_matrices_is_torchs_adaptive_pool(shape):
    x = torch.rand(shape, dtype=torch.float64)
    assert torch.allclose(adaptive_avg_pool(x, 64), F.adaptive_avg_pool2d(x, 64), atol=1e-12)


def test_fp32_bundle_matches_pytorch_on_an_unseen_photograph(fp32_bundle, model):
    from lamsc.semcom.graphs import model_graphs
    from lamsc.export.samples import model_samples
    from lamsc.semcom.skb import build_segmenter

    m = fp32_bundle.manifest
    assert set(m["graphs"]) == {"transmitter", "receiver"} and m["precision"] == "fp32"
    for g in m["graphs"].values():
        assert g["tensorrt_problems"] == [] and g["opset"] >= 17
        assert all(w["relative"] <= 1e-4 for w in g["verification"]["worst"])
    # a photograph of another size than those verified at export: H and W are dynamic
    samples = model_samples(model, build_segmenter(None), bundled_photos(["astronaut"]))
    graphs = model_graphs(model)
    for name in ("transmitter", "receiver"):
        for c in compare(graphs[name], graphs[name].spec(), fp32_bundle.path(name), samples[name][0]):
            assert c.relative < 1e-4, c


def test_a_changed_or_missing_graph_is_refused(fp32_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(fp32_bundle.root, tmp_path / "copy")
    assert load_bundle(copy).graphs == fp32_bundle.graphs
    data = bytearray((copy / "receiver.onnx").read_bytes())
    data[-10] ^= 1
    (copy / "receiver.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="receiver.onnx does not match its manifest"):
        load_bundle(copy)
    (copy / "receiver.onnx").unlink()
    with pytest.raises(BundleError, match="lacks receiver.onnx"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a lamsc bundle"):
        load_bundle(tmp_path)


def test_bundle_writes_the_device_steps(fp32_bundle):
    script = (fp32_bundle.root / "build_engines.sh").read_text()
    assert "trtexec --onnx=transmitter.onnx --saveEngine=engines/transmitter.engine" in script
    assert "--minShapes=image:1x3x64x64" in script
    steps = (fp32_bundle.root / "JETSON.md").read_text()
    assert "Engines are tied to this GPU" in steps and "cannot build" not in steps
    libs = fp32_bundle.manifest["libraries"]
    assert libs["torch"] == torch.__version__.split("+")[0] or libs["torch"].startswith(torch.__version__[:4])


def test_fp16_and_int8_bundles_run_and_int8_is_symmetric(tmp_path, model, photos):
    import onnxruntime  # noqa: F401

    fp16 = write_bundle(model, tmp_path / "fp16", "fp16", images=photos)
    for g in fp16.manifest["graphs"].values():
        assert all(w["sqnr_db"] >= 25 for w in g["verification"]["worst"])
    int8 = write_bundle(model, tmp_path / "int8", "int8", images=photos)
    for name in int8.graphs:
        graph = onnx.load(str(int8.path(name)))
        assert count_qdq(graph) > 0
        assert tensorrt_problems(graph) == []
        zero_points = [numpy_helper.to_array(t) for t in graph.graph.initializer
                       if any(t.name == n.input[2] for n in graph.graph.node
                              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2)]
        assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
        # GDN/IGDN and ASI stay in float (export.quantise.CODEC_FLOAT): none of their nodes reads a dequantised tensor
        kept = [n for n in graph.graph.node if re.match(r"^/(encoder|decoder)/stages\.\d+/act/|^/asi/", n.name)]
        dequantised = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        assert kept and not [n.name for n in kept if dequantised.intersection(n.input)]
    # the rate the manifest records is what the payloads carry: feature values packed through each backend
    from lamsc.runtime.backends import OnnxRuntimeBackend
    from lamsc.semcom.torch_backend import TorchBackend
    from lamsc.semcom.skb import build_segmenter

    seg = build_segmenter(None)
    from lamsc.semcom.transmission import Transmitter

    snrs = np.linspace(*model.config.snr_range, SNR_POINTS)  # photograph i is verified at snrs[i]
    sent = {name: [Transmitter(b, seg, snr_db=snrs[i]).send(p.pixels).value_count
                   for i, p in enumerate(photos)]
            for name, b in (("torch", TorchBackend(model, device="cpu")), ("int8", OnnxRuntimeBackend(int8)))}
    rate = int8.manifest["graphs"]["transmitter"]["verification"]["rate"]
    assert rate["levels_x_pytorch"] == [round(a / b, 4) for a, b in zip(sent["int8"], sent["torch"])]
    assert rate["overall"] == round(sum(sent["int8"]) / sum(sent["torch"]), 4)
    assert fp16.manifest["graphs"]["transmitter"]["verification"]["rate"]["overall"] == pytest.approx(1, abs=0.01)


def test_accuracy_controlled_int8_keeps_each_graphs_link_psnr_within_the_drop(tmp_path, model, photos, fp32_bundle):
    """Each int8 graph, with the other in float, loses at most the drop on its calibration photographs:
    PSNR of the noise-free link's reconstruction, scored with scikit-image, against the fp32 bundle's; what
    the transmitter computed is sent at unit power and held to the float one's rate (levels it keeps beyond
    float's are masked off)."""
    import onnxruntime as ort
    from skimage.metrics import peak_signal_noise_ratio

    from lamsc.export.samples import model_samples
    from lamsc.semcom.images import NamedImage
    from lamsc.semcom.skb import build_segmenter

    # plain int8 of the default transmitter loses ~0.4 dB on these crops: the drop makes accuracy control revert
    # layers, yet is loose enough that it stops after a few (at 0.05 dB it reverts nearly every layer, minutes)
    drop = 0.15

    calibration = [NamedImage(f"{p.name}-crop", p.pixels[:160, :192]) for p in bundled_photos(("astronaut", "coffee",
                                                                                                 "rocket"))]
    int8 = write_bundle(model, tmp_path / "int8", "int8", images=photos, int8=Int8Options(calibration=calibration,
                                                                                          max_drop=drop))
    assert int8.manifest["int8"] == {"calibrated_on": [c.name for c in calibration], "max_drop_db": drop}
    run = {(b.precision, g): ort.InferenceSession(str(b.path(g)), providers=["CPUExecutionProvider"])
           for b in (fp32_bundle, int8) for g in ("transmitter", "receiver")}
    L = model.config.num_levels

    def link_psnr(tx: str, rx: str) -> float:
        scores = []
        for image, masks, snr in model_samples(model, build_segmenter(None), calibration)["transmitter"]:
            feed = {"image": image.numpy(), "masks": masks.numpy(), "snr_db": snr.numpy()}
            z, depth, _ = run[tx, "transmitter"].run(None, feed)
            levels = np.clip(np.ceil(depth[:, 0].astype(np.float32) * L), 1, L).astype(np.int64)
            channels = np.arange(z.shape[1]).reshape(1, -1, 1, 1)
            kept = channels < (levels * (z.shape[1] // L))[:, None]
            power = np.mean(z[kept].astype(np.float64) ** 2)
            z = (np.where(kept, z, 0) / np.sqrt(power)).astype(np.float32)  # sent at unit power
            float_depth = run["fp32", "transmitter"].run(["depth"], feed)[0]
            levels = np.minimum(levels, np.clip(np.ceil(float_depth[:, 0] * L), 1, L).astype(np.int64))
            out = run[rx, "receiver"].run(["image"], {"z": z, "levels": levels, "snr_db": snr.numpy()})[0]
            scores.append(peak_signal_noise_ratio(image.numpy().astype(np.float64), np.clip(out, 0, 1), data_range=1))
        return float(np.mean(scores))

    reference = link_psnr("fp32", "fp32")
    assert reference - link_psnr("int8", "fp32") <= drop + 1e-3
    assert reference - link_psnr("fp32", "int8") <= drop + 1e-3
    assert all(count_qdq(onnx.load(str(int8.path(g)))) > 0 for g in int8.graphs)


def test_a_negative_int8_drop_is_refused_before_any_export(tmp_path, model):
    with pytest.raises(UserError, match="negative"):
        write_bundle(model, tmp_path / "b", "int8", int8=Int8Options(max_drop=-0.1))
    assert not any((tmp_path / "b").glob("*.onnx"))


def _qdq_graph(zero_point: int, dtype) -> onnx.ModelProto:
    zp = numpy_helper.from_array(np.array(zero_point, dtype), "zp")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [zp, scale])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_check_finds_asymmetric_and_unsigned_quantisers():
    assert qdq_problems(_qdq_graph(0, np.int8)) == []
    assert any("asymmetric" in p for p in qdq_problems(_qdq_graph(3, np.int8)))
    assert any("uint8" in p for p in qdq_problems(_qdq_graph(0, np.uint8)))


def test_nncf_unsigned_quantisers_become_signed_with_the_same_range():
    from lamsc.export.quantise import signed_int8

    import onnxruntime as ort

    x = np.linspace(0, 12.7, 4).astype(np.float32)
    model = _qdq_graph(0, np.uint8)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    fixed = signed_int8(model)
    after = ort.InferenceSession(fixed.SerializeToString()).run(None, {"x": x})[0]
    assert qdq_problems(fixed) == []
    step = 0.1 * 255 / 127
    assert np.abs(after - x).max() <= step / 2 + 1e-6 and np.abs(before - x).max() <= 0.05 + 1e-6
    assert after.max() == pytest.approx(before.max(), abs=step)  # the top of the range is kept


def test_skb_decoder_graph_matches_sams_decoder_and_avoids_the_onehot_tile(tiny_sam_checkpoint, tmp_path):
    """Our decoder graph equals segment_anything's own decoder on point prompts, and, unlike the graph
    segment_anything's SamOnnxModel exports, has no Tile fed by a OneHot (TensorRT refuses it)."""
    from segment_anything.utils.onnx import SamOnnxModel

    from lamsc.semcom.sam_checkpoint import load_sam

    sam, _ = load_sam(tiny_sam_checkpoint)
    graphs = skb_graphs(sam)
    samples = skb_samples(graphs["skb_encoder"], bundled_photos(["chelsea"]), prompts=4)
    emb, pts, labels = samples["skb_decoder"][0]
    with torch.no_grad():
        ours_masks, ours_iou = graphs["skb_decoder"](emb, pts, labels)
        sparse, dense = sam.prompt_encoder(points=(pts, labels.int()), boxes=None, masks=None)
        ref_masks, ref_iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
    assert torch.allclose(ours_masks, ref_masks, atol=1e-4) and torch.allclose(ours_iou, ref_iou, atol=1e-5)
    for name, module in graphs.items():
        example = samples[name][0]
        path = export_onnx(module, module.spec(), example, tmp_path / f"{name}.onnx")
        assert tensorrt_problems(onnx.load(str(path))) == []
        assert all(c.relative < 1e-3 for c in compare(module, module.spec(), path, example))
    theirs = tmp_path / "sam_onnx_model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SamOnnxModel(sam, return_single_mask=False),
                          (emb, pts.transpose(0, 1), labels.transpose(0, 1), torch.zeros(1, 1, 256, 256),
                           torch.tensor([0.0]), torch.tensor([300.0, 451.0])), str(theirs),
                          input_names=["e", "pc", "pl", "mi", "hm", "os"],
                          dynamic_axes={"pc": {1: "n"}, "pl": {1: "n"}}, opset_version=17, dynamo=False)
    assert onehot_shape_problems(onnx.load(str(theirs)))


def test_tensorrt_command_and_profiles(fp32_bundle):
    spec = fp32_bundle.spec("receiver")
    prof = shape_profile(spec)
    assert prof["z"] == ((1, 16, 8, 8), (1, 16, 64, 64), (4, 16, 136, 240))
    assert prof["levels"][2] == (4, 136, 240) and prof["snr_db"][0] == (1,)
    cmd = trtexec_command("receiver.onnx", "r.engine", spec, "int8")
    assert "--int8 --fp16" in cmd and "--skipInference" in cmd
    assert "--optShapes=z:1x16x64x64,levels:1x64x64,snr_db:1" in cmd
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="TensorRT is not installed"):
            build_engine(fp32_bundle.path("receiver"), "/tmp/x.engine", spec, "fp32")


def test_export_command_writes_a_bundle_and_profile_runs_it(tmp_path, photo, capsys):
    from PIL import Image

    from lamsc.cli import main

    img = tmp_path / "coffee.png"
    Image.fromarray(photo).save(img)
    out = tmp_path / "bundle"
    assert main(["export", "--out", str(out), "--images", str(img), "--images", "camera"]) == 0
    assert json.loads((out / "manifest.json").read_text())["verified_on"] == ["coffee", "camera"]  # by name too
    # the shipped model's density travels in the bundle, for the digital mode
    shipped = load_entropy_model(DEFAULT_MODEL)
    assert load_bundle(out).entropy_model().tables.fingerprint == shipped.tables.fingerprint
    assert main(["profile", str(out), "--images", str(img), "--repeats", "1", "--out", str(tmp_path / "p")]) == 0
    result = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert result["backend"].startswith("onnxruntime") and result["lamsc_link"].startswith("digital mode")
    assert main(["profile", str(out), "--backend", "torch", "--images", str(img)]) == 2
    # lamsc transmit runs the bundle through the same Transmitter and Receiver as the checkpoint, in either mode
    for mode in ([], ["--digital"]):
        rows = []
        for source in (out, None):
            capsys.readouterr()
            assert main(["transmit", str(img), *(["--model", str(source)] if source else []), *mode, "--out",
                         str(tmp_path / "t"), "--json"]) == 0
            rows.append(json.loads(capsys.readouterr().out)["results"]["images"][0]["lamsc"])
        ort_row, torch_row = rows
        assert ort_row["link"] == torch_row["link"] == ("digital" if mode else "analog")
        assert abs(ort_row["psnr"] - torch_row["psnr"]) < 0.05 and abs(ort_row["bits"] - torch_row["bits"]) <= 64
    density = out / "density.safetensors"
    data = bytearray(density.read_bytes())
    data[-1] ^= 1
    density.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="density.safetensors does not match its manifest"):
        load_bundle(out)


def test_int8_linears_on_token_sequences_run_as_integer_matmuls(tmp_path):
    """A transformer's Linear on (batch, tokens, dim) with NNCF Q/DQ: ORT's default MatMulAddFusion leaves
    it a float Gemm on dequantised inputs; the sessions lamsc opens keep it an integer MatMul."""
    import onnxruntime as ort

    from lamsc.export.quantise import quantise_onnx
    from lamsc.export.sessions import _disabled_for, session

    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).eval()
    x = torch.randn(1, 196, 64)
    fp32 = tmp_path / "mlp.onnx"
    torch.onnx.export(mlp, (x,), str(fp32), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    feeds = [{"x": torch.randn(1, 196, 64, generator=torch.Generator().manual_seed(i)).numpy()} for i in range(8)]
    int8 = quantise_onnx(fp32, tmp_path / "mlp_int8.onnx", feeds, transformer=True, tensorrt=False)

    def optimised_ops(disabled):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
        ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        graph = onnx.load(str(tmp_path / "optimised.onnx")).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        return {n.op_type for n in graph.node}, [n for n in graph.node if n.op_type == "Gemm"
                                                 and made_by.get(n.input[0]) == "DequantizeLinear"]

    ops, float_gemms = optimised_ops([])
    assert float_gemms  # what this works around; if ORT fixes it, the workaround can go
    assert _disabled_for(int8) == ["MatMulAddFusion"] and _disabled_for(fp32) == []
    ops, float_gemms = optimised_ops(_disabled_for(int8))
    assert not float_gemms and "MatMulIntegerToFloat" in ops
    # and it still computes the same function: int8 against the float graph
    y = session(int8, ["CPUExecutionProvider"]).run(None, feeds[0])[0]
    ref = mlp(torch.from_numpy(feeds[0]["x"])).detach().numpy()
    sqnr = 10 * np.log10((ref ** 2).mean() / ((y - ref) ** 2).mean())
    assert 15 < sqnr < 80  # 19.2-19.7 dB over initialisation seeds 0-5; a wrong function scores about 0


def test_int8_for_onnxruntime_is_flagged_and_refused_by_the_engine_build(tmp_path, photo):
    """``--int8-for onnxruntime`` keeps NNCF's uint8 activations: the manifest names them as TensorRT problems
    and the engine build refuses the bundle before it needs TensorRT, saying how to export for it."""
    from PIL import Image

    from lamsc.cli import main

    img = tmp_path / "coffee.png"
    Image.fromarray(photo).save(img)
    out = tmp_path / "bundle"
    assert main(["export", "--out", str(out), "--images", str(img), "--precision", "int8", "--int8-for", "tmp"]) == 2
    assert main(["export", "--out", str(out), "--images", str(img), "--precision", "int8",
                 "--int8-for", "onnxruntime"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["int8_for"] == "onnxruntime"
    flagged = [p for g in manifest["graphs"].values() for p in g["tensorrt_problems"]]
    uint8 = [n for g in manifest["graphs"].values() for n in onnx.load(str(out / g["file"])).graph.initializer
             if n.data_type == onnx.TensorProto.UINT8]
    assert uint8 and flagged and all("quantises to uint8" in p for p in flagged)
    assert "TensorRT cannot build this bundle" in (out / "JETSON.md").read_text()
    run = subprocess.run([sys.executable, "-m", "lamsc.export.engines", str(out)], capture_output=True, text=True)
    assert run.returncode == 1 and "--int8-for tensorrt" in run.stderr and "Traceback" not in run.stderr
