"""lamsc.compress: budgets, the cost model, pruning (codec, SAM ViT, TinyViT), distillation, the planner."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from lamsc.cli import main
from lamsc.compress.budget import Budget, Cost
from lamsc.compress.calibration import (CALIBRATION, PARAMETERS, PUBLISHED, REFERENCE_WORK, Work, calibrate, predict_ms,
                                        predict_row)
from lamsc.compress.cost import Target, cost_of, count_macs, count_work, estimate
from lamsc.compress.distill import DistillConfig, distil_codec, distil_encoder
from lamsc.compress.prune import SubPixelPruner, prune_codec
from lamsc.compress.prune_sam import prune_sam_encoder
from lamsc.compress.skb import reference_masks, skb_quality
from lamsc.errors import UserError
from lamsc.export.graph_checks import count_qdq
from lamsc.runtime.devices import DEVICES
from lamsc.semcom import LamscModel, ModelConfig, load_model
from lamsc.semcom.codec import SubPixelUpsample
from lamsc.semcom.sam_checkpoint import load_sam
from lamsc.semcom.skb_student import ResizedTinyViT, ResNetStudent, save_skb
from lamsc.semcom.training import TrainingImage


def _codec_io(model, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    masks = (torch.rand(1, model.config.segments, size, size, generator=g) > 0.5).float()
    snr = torch.tensor([10.0])
    with torch.no_grad():
        enc = model.encode(x, masks, snr)
        return enc, model.decode(enc["z"], enc["levels"], snr)


# -- budget ----------------------------------------------------------------------------------------------

def test_budget_parses_units_and_relative_limits():
    b = Budget.parse("latency-ms=120,params=400k,bytes=2M,macs=1.5G,energy-mj=50%")
    assert b.limits == {"latency_ms": 120.0, "params": 4e5, "bytes": 2e6, "macs": 1.5e9}
    assert b.relative == {"energy_mj": 0.5}
    resolved = b.resolve(Cost(200.0, 80.0, 10, 10, 10))
    assert resolved.limits["energy_mj"] == pytest.approx(40.0)
    over = Cost(130.0, 30.0, 300_000, 1_000_000, 10**9)
    assert resolved.violations(over) == {"latency_ms": pytest.approx(130 / 120)}
    assert resolved.excess(over) == pytest.approx(130 / 120)
    assert resolved.meets(Cost(100.0, 30.0, 300_000, 1_000_000, 10**9))


@pytest.mark.parametrize("text", ["latency=5", "latency-ms", "params=abc", "params=-3", ""])
def test_budget_rejects_malformed_terms(text):
    with pytest.raises(UserError):
        Budget.parse(text)


# -- cost ------------------------------------------------------------------------------------------------

def test_work_of_a_network_matches_the_closed_forms():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    assert count_macs(conv, (torch.zeros(1, 8, 20, 30),)) == 16 * 8 * 9 * 20 * 30
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 7))
    work = count_work(net, (torch.zeros(1, 3, 5, 5),))
    assert work.conv_macs == 4 * 3 * 25 and work.matmul_macs == 100 * 7 and work.layers == 2
    assert work.activations == (3 * 25 + 4 * 25) + (100 + 7)  # each layer's input and output
    assert (work + work).macs == 2 * work.macs


def test_fused_attention_is_counted_as_its_two_matrix_products():
    """timm's and torch's transformers call scaled_dot_product_attention, whose fused CPU kernels torch's flop
    counter does not see: q @ k^T and the weights @ v are 2 N^2 d MACs per head of dimension d."""
    heads, n, d = 3, 50, 16

    class Attention(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    assert count_work(Attention(), (torch.zeros(1, heads, n, d),)).matmul_macs == heads * 2 * n * n * d


def test_published_networks_work_is_what_their_sources_publish():
    """REFERENCE_WORK against the MACs each source publishes (GMACs, rounded as published)."""
    published = {"resnet50@224": 4.09, "yolo26n@640": 2.7, "yolo26m@640": 34.1, "yolo26x@640": 97.0,
                 "efficientvit-cls-b1@224": 0.52, "efficientvit-seg-l1@512": 36,
                 "efficientvit-sam-xl0-encoder@1024": 185,
                 "bert-large-squad@384": 246.93 / 2}  # open_model_zoo's GOps, softmax and normalisation included
    for name, gmacs in published.items():
        assert REFERENCE_WORK[name][0].macs / 1e9 == pytest.approx(gmacs, rel=0.02), name
    assert {r.network for r in PUBLISHED} <= set(REFERENCE_WORK)


def test_jetson_cost_model_is_the_fit_of_the_published_latencies():
    """CALIBRATION is what fitting PUBLISHED gives, and its leave-one-out errors are what it prints."""
    fitted = calibrate()
    for r in PUBLISHED:
        assert predict_row(CALIBRATION.values, r) == pytest.approx(predict_row(fitted.values, r), rel=2e-3)
    assert fitted.rows == CALIBRATION.rows == len(PUBLISHED)
    assert fitted.loo_median == pytest.approx(CALIBRATION.loo_median, abs=2e-3)
    assert fitted.loo_p90 == pytest.approx(CALIBRATION.loo_p90, abs=2e-3)
    assert CALIBRATION.loo_p90 < 0.3  # nine in ten published figures are reproduced within 30% out of sample


def test_hand_built_engines_scale_only_mlperf_rows():
    """The MLPerf factor applies to the MLPerf rows alone, and lamsc's own estimates never take it."""
    assert {r.source.split()[0] for r in PUBLISHED if r.hand_built} == {"MLPerf"}
    assert sum(r.hand_built for r in PUBLISHED) == 6
    h = CALIBRATION.values[PARAMETERS.index("h_hand_built")]
    row = next(r for r in PUBLISHED if r.hand_built)
    work, params = REFERENCE_WORK[row.network]
    graph_built = predict_ms(CALIBRATION.values, work, params, row.precision, row.device)
    assert predict_row(CALIBRATION.values, row) == pytest.approx(h * graph_built)
    assert estimate(work, params, row.precision, row.device)[0] == pytest.approx(graph_built)


def test_cost_model_estimates_and_says_how_well_it_does(tmp_path):
    p = DEVICES["orin-nano"]
    work = Work(10**9, 0, 10, 10**6)
    ms, mj = estimate(work, 1000, "fp16", "orin-nano")
    assert ms == pytest.approx(predict_ms(CALIBRATION.values, work, 1000, "fp16", "orin-nano"))
    assert mj == pytest.approx(ms * p.active_w)
    assert estimate(work, 1000, "int8", "orin-nano")[0] < ms < estimate(work, 1000, "fp32", "orin-nano")[0]
    # the "cpu" profile stays the stated roofline: memory-bound when weights dominate
    cpu = DEVICES["cpu"]
    ms, _ = estimate(Work(1), 10**9, "int8", "cpu")
    assert ms == pytest.approx(1e9 / (cpu.memory_gbps * 1e9) * 1e3)
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"0" * 10)
    cost, check = cost_of([graph], work, 1000, "fp16", Target("orin-nx"))
    assert ("published Jetson latencies" in cost.how and f"median {CALIBRATION.loo_median:.0%}" in cost.how
            and check == {})


# -- codec pruning ---------------------------------------------------------------------------------------

def test_subpixel_pruner_removes_exactly_the_channels_named():
    torch.manual_seed(0)
    layer = SubPixelUpsample(6, 5).eval()
    x = torch.randn(1, 6, 7, 9)
    with torch.no_grad():
        full = layer(x)
    SubPixelPruner().prune_out_channels(layer, [1, 3])
    with torch.no_grad():
        assert torch.equal(layer(x), full[:, [0, 2, 4]])
    SubPixelPruner().prune_in_channels(layer, [0])
    assert layer[0].in_channels == 5 and SubPixelPruner().get_out_channels(layer) == 3


def test_pruned_codec_keeps_its_interfaces_and_round_trips_through_files(tmp_path):
    model = load_model()
    pruned = prune_codec(model, 0.5)
    assert sum(p.numel() for p in pruned.parameters()) < 0.4 * sum(p.numel() for p in model.parameters())
    assert pruned.decoder.stages[2].resample[0].out_channels < model.decoder.stages[2].resample[0].out_channels
    enc, out = _codec_io(pruned, 64)
    t_enc, t_out = _codec_io(model, 64)
    assert enc["z"].shape == t_enc["z"].shape and out["image"].shape == t_out["image"].shape
    pruned.save(tmp_path / "m")
    loaded = LamscModel.load(tmp_path / "m")
    assert json.loads((tmp_path / "m.json").read_text())["architecture"]
    _, again = _codec_io(loaded, 64)
    assert torch.equal(again["image"], out["image"])


def test_pruning_a_frozen_model_prunes_it_the_same():
    model = load_model()
    shapes = {k: v.shape for k, v in prune_codec(model, 0.4).state_dict().items()}
    model.requires_grad_(False)  # as a teacher is after distillation
    assert {k: v.shape for k, v in prune_codec(model, 0.4).state_dict().items()} == shapes


def test_pruning_nothing_changes_nothing():
    model = load_model()
    _, a = _codec_io(model)
    _, b = _codec_io(prune_codec(model, 0.0))
    assert torch.equal(a["image"], b["image"])


def _training_images(n=3, size=96):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        masks = np.zeros((size, size), np.uint8)
        masks[: size // 2] |= 1
        masks[:, : size // 3] |= 2
        out.append(TrainingImage(pixels, masks))
    return out


def test_codec_distillation_resumes_exactly(tmp_path):
    teacher = LamscModel(ModelConfig(channels=8, width=16, num_levels=4, segments=2))
    cfg = DistillConfig(steps=4, crop=32, batch=2, checkpoint_every=2)
    images = _training_images()
    straight = distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "a")

    def interrupt(step, total, logs):  # a crash after the step-2 checkpoint, before step 4's
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "b", progress=interrupt)
    assert torch.load(tmp_path / "b" / "distill_state.pt", weights_only=True)["step"] == 2
    resumed = distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "b")
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k, rtol=1e-5, atol=1e-6)


def test_colour_augmentation_greys_a_quarter_and_keeps_grey_grey():
    from lamsc.compress.distill import LUMA, colour_augment

    g = torch.Generator().manual_seed(0)
    colour = torch.rand(400, 3, 8, 8, generator=g)
    out = colour_augment(colour, torch.Generator().manual_seed(1))
    assert out.shape == colour.shape and out.min() >= 0 and out.max() <= 1
    grey = (out.amax(1) - out.amin(1)).flatten(1).amax(1) < 1e-6
    assert 0.18 < grey.float().mean() < 0.32  # p = 1/4; 400 draws put it here with probability > 0.999
    # A greyscale image is its own luma: it stays grey (only its contrast changes), whatever the draw.
    mono = (colour * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    out = colour_augment(mono, torch.Generator().manual_seed(2))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


# -- SKB encoders ----------------------------------------------------------------------------------------

def test_sam_vit_loses_heads_and_mlp_width_and_loads_back(tiny_sam_checkpoint, tmp_path):
    sam, arch = load_sam(tiny_sam_checkpoint)
    pruned = prune_sam_encoder(sam, arch, 0.5)
    for before, after in zip(sam.image_encoder.blocks, pruned.image_encoder.blocks):
        assert after.attn.num_heads == before.attn.num_heads // 2
        assert after.mlp.lin1.out_features == before.mlp.lin1.out_features // 2
        assert after.attn.rel_pos_h.shape == before.attn.rel_pos_h.shape  # per head size, shared by heads
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        emb = pruned.image_encoder(x)
    assert emb.shape == (1, 256, 64, 64)
    from lamsc.semcom.architecture import record
    from lamsc.semcom.sam_architecture import build_sam

    base = {"family": "sam", "embed_dim": arch.embed_dim, "depth": arch.depth, "num_heads": arch.num_heads,
            "global_attn_indexes": list(arch.global_attn_indexes)}
    path = save_skb(pruned, base, {"kind": "pruned", "architecture": record(pruned, build_sam(arch))}, tmp_path / "skb")
    loaded, loaded_arch = load_sam(path)
    assert "pruned" in loaded_arch.describe()
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(x), emb)


@pytest.mark.slow
def test_tiny_vit_heads_are_removed_head_by_head(mobilesam_checkpoint, tmp_path):
    sam, arch = load_sam(mobilesam_checkpoint)
    pruned = prune_sam_encoder(sam, arch, 0.5)
    attns = [m for m in pruned.image_encoder.modules() if hasattr(m, "attention_biases")]
    originals = [m for m in sam.image_encoder.modules() if hasattr(m, "attention_biases")]
    for a, o in zip(attns, originals):
        assert a.num_heads == max(1, round(o.num_heads / 2))
        assert a.attention_biases.shape[0] == a.num_heads and a.ab.shape[0] == a.num_heads
        assert a.qkv.out_features == a.num_heads * (2 * a.key_dim + a.d)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        emb = pruned.image_encoder(x)
    from lamsc.semcom.architecture import record
    from lamsc.semcom.sam_architecture import build_sam

    path = save_skb(pruned, {"family": "mobilesam"},
                    {"kind": "pruned", "architecture": record(pruned, build_sam(arch))}, tmp_path / "skb")
    loaded, _ = load_sam(path)
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(x), emb)


def test_resized_tiny_vit_is_the_official_tiny_vit_built_at_that_size(mobilesam_checkpoint, tmp_path):
    from mobile_sam.modeling import TinyViT

    sam, arch = load_sam(mobilesam_checkpoint)
    resized = ResizedTinyViT(copy.deepcopy(sam.image_encoder), 448, scale_consistent=False).eval()
    # Reference: mobile_sam's own builder at img_size=448 with the teacher's weights, on the resized image.
    official = TinyViT(img_size=448, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                       window_sizes=[7, 7, 14, 7], drop_path_rate=0.0, layer_lr_decay=0.8)
    official.load_state_dict(sam.image_encoder.state_dict(), strict=True)
    official.eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = official.patch_embed(torch.nn.functional.interpolate(x, size=(448, 448), mode="bilinear"))
        for layer in official.layers:
            tokens = layer(tokens)
        ref = official.neck(tokens.view(1, 28, 28, -1).permute(0, 3, 1, 2))
        ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear")
        got = resized(x)
    assert got.shape == (1, 256, 64, 64)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # Saved as a compressed SKB, it loads back to the same function.
    whole = copy.deepcopy(sam)
    whole.image_encoder = resized
    path = save_skb(whole, {"family": "mobilesam"}, {"kind": "resized", "architecture": {}, **resized.settings()},
                    tmp_path / "skb")
    loaded, loaded_arch = load_sam(path)
    assert "TinyViT at 448" in loaded_arch.describe()
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(x), got)


def test_a_resampled_kernel_gives_the_same_output_on_a_linear_image():
    from lamsc.semcom.skb_student import resample_kernel

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    a, b, c = torch.randn(3, 2, 1, 1, generator=g, dtype=torch.float64)

    def patch(centre, spacing):  # the plane a + b*y + c*x (per channel) at 3 x 3 points ``spacing`` apart
        t = centre + torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) * spacing
        return (a + b * t.view(-1, 1) + c * t.view(1, -1))[None]

    factor = 448 / 1024  # the coarse grid's points are 1 / factor fine-grid units apart
    coarse_weight = resample_kernel(weight, factor)
    for centre in (0.0, 0.7, 5.3):
        fine = torch.nn.functional.conv2d(patch(centre, 1.0), weight)
        coarse = torch.nn.functional.conv2d(patch(centre, 1 / factor), coarse_weight)
        torch.testing.assert_close(coarse, fine)
    # and it is not the identity: the taps moved towards the centre
    assert coarse_weight[..., 1, 1].abs().sum() > weight[..., 1, 1].abs().sum()


def test_scale_consistent_resizing_stays_closer_to_the_teacher(mobilesam_checkpoint, tmp_path):
    from lamsc.compress.distill import embedding_cosine
    from lamsc.compress.skb import sam_inputs
    from lamsc.semcom.images import bundled_photos

    sam, _ = load_sam(mobilesam_checkpoint)
    x = sam_inputs(sam, bundled_photos(["coffee"]))[0]
    plain = ResizedTinyViT(copy.deepcopy(sam.image_encoder), 448, scale_consistent=False).eval()
    scaled = ResizedTinyViT(copy.deepcopy(sam.image_encoder), 448).eval()
    assert [b.window_size for b in scaled.encoder.layers[2].blocks] == [6] * 6  # 14 * 448 / 1024, rounded
    with torch.no_grad():
        teacher = sam.image_encoder(x)
        cos_plain, cos_scaled = embedding_cosine(plain(x), teacher), embedding_cosine(scaled(x), teacher)
    assert cos_scaled > cos_plain + 0.03, (cos_plain, cos_scaled)  # measured 0.83 -> 0.94 on ten photographs
    whole = copy.deepcopy(sam)
    whole.image_encoder = scaled
    path = save_skb(whole, {"family": "mobilesam"}, {"kind": "resized", "architecture": {}, **scaled.settings()},
                    tmp_path / "skb")
    with torch.no_grad():  # the window sizes and bias indices are rebuilt from the file's settings, not stored
        torch.testing.assert_close(load_sam(path)[0].image_encoder(x), scaled(x), rtol=0, atol=0)


def test_a_resized_tiny_vit_fine_tunes_its_neck_alone(mobilesam_checkpoint, tmp_path):
    from lamsc.compress.distill import embedding_cosine
    from lamsc.compress.skb import finetune_neck, sam_inputs
    from lamsc.semcom.images import bundled_photos

    sam, _ = load_sam(mobilesam_checkpoint)
    xs = sam_inputs(sam, bundled_photos(["coffee", "astronaut"]))
    with torch.no_grad():
        ys = [sam.image_encoder(x) for x in xs]
    encoder = ResizedTinyViT(copy.deepcopy(sam.image_encoder), 256, neck_grid=64).eval()
    # On the teacher's grid, the neck keeps the teacher's kernels and runs on the upsampled trunk features.
    teacher_neck = sam.image_encoder.neck.state_dict()
    assert all(torch.equal(v, encoder.encoder.neck.state_dict()[k]) for k, v in teacher_neck.items())
    with torch.no_grad():
        up = torch.nn.functional.interpolate(encoder.trunk(xs[0]), size=(64, 64), mode="bilinear")
        torch.testing.assert_close(encoder(xs[0]), sam.image_encoder.neck(up), rtol=0, atol=0)
        before = [embedding_cosine(encoder(x), y) for x, y in zip(xs, ys)]
    trunk = {k: v.clone() for k, v in encoder.state_dict().items() if not k.startswith("encoder.neck.")}
    finetune_neck(encoder, (xs, ys), None, DistillConfig(steps=10, batch=2, lr=3e-4), tmp_path)
    with torch.no_grad():
        after = [embedding_cosine(encoder(x), y) for x, y in zip(xs, ys)]
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in trunk.items())  # the trunk is untouched
    assert not torch.equal(encoder.encoder.neck[2].weight, teacher_neck["2.weight"])
    assert sum(after) > sum(before) + 0.01, (before, after)  # and the encoder's own neck learned


def test_resizing_refuses_sam_vit_and_sizes_that_break_the_token_grid(tiny_sam_checkpoint, mobilesam_checkpoint):
    sam, _ = load_sam(tiny_sam_checkpoint)
    with pytest.raises(UserError, match="TinyViT"):
        ResizedTinyViT(sam.image_encoder, 448)
    mobile, _ = load_sam(mobilesam_checkpoint)
    for size in (450, 1024):
        with pytest.raises(UserError, match="multiple of 16"):
            ResizedTinyViT(mobile.image_encoder, size)


@pytest.mark.parametrize("flag,value,message", [("--resize", "450", "multiple of 16"),
                                                ("--resize", "448.5", "whole numbers"),
                                                ("--students", "-512", "whole numbers"),
                                                ("--repeats", "0", "timed rounds per candidate")])
def test_bad_input_sizes_are_refused_before_any_work(tiny_sam_checkpoint, tmp_path, capsys, flag, value, message):
    code = main(["compress", "--sam", str(tiny_sam_checkpoint), "--budget", "latency-ms=25%", flag, value,
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not any(tmp_path.iterdir())  # refused before the teacher ran


def test_fine_tuning_from_the_teacher_keeps_its_batch_norm_statistics(mobilesam_checkpoint, tmp_path):
    sam, _ = load_sam(mobilesam_checkpoint)
    x = [torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        t = [sam.image_encoder(x[0])]

    def stats(m):
        return [b.running_var.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]

    for from_teacher in (True, False):
        student = ResizedTinyViT(copy.deepcopy(sam.image_encoder), 256)
        before = stats(student)
        weights = student.encoder.neck[0].weight.clone()
        distil_encoder(student, x, t, DistillConfig(steps=2, batch=1, lr=1e-4), tmp_path / str(from_teacher),
                       from_teacher=from_teacher)
        kept = all(torch.equal(a, b) for a, b in zip(before, stats(student)))
        assert kept == from_teacher  # a plain student's statistics follow its batches; the teacher's are kept
        assert not torch.equal(weights, student.encoder.neck[0].weight)  # and both were trained


def test_distillation_returns_its_best_validated_state_and_resumes_to_it(tmp_path):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 8, 1))
    inputs = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(4)]
    with torch.no_grad():
        targets = [net(x) for x in inputs]  # the student starts as the teacher: nothing can beat step 0
    start = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = DistillConfig(steps=4, batch=2, lr=0.5, checkpoint_every=2)  # a rate that can only make it worse

    def student():
        s = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 8, 1))
        s.load_state_dict(start)
        return s

    plain = distil_encoder(student(), inputs, targets, cfg, tmp_path / "plain")
    assert not torch.equal(plain[0].weight, start["0.weight"])
    kept = distil_encoder(student(), inputs, targets, cfg, tmp_path / "val", validation=(inputs[:2], targets[:2]))
    assert all(torch.equal(v, start[k]) for k, v in kept.state_dict().items())
    state = torch.load(tmp_path / "val" / "distill_state.pt", weights_only=True)
    assert state["best"]["step"] == 0 and [v["step"] for v in state["validation"]] == [0, 2, 4]
    # a finished run, started again, returns the same best state
    again = distil_encoder(student(), inputs, targets, cfg, tmp_path / "val", validation=(inputs[:2], targets[:2]))
    assert all(torch.equal(v, start[k]) for k, v in again.state_dict().items())


def test_student_skb_round_trips_and_the_teacher_scores_perfectly_against_itself(tiny_sam_checkpoint, tmp_path,
                                                                                   monkeypatch):
    from lamsc.compress import skb as skb_module

    sam, arch = load_sam(tiny_sam_checkpoint)
    x = [torch.randn(1, 3, 1024, 1024)]
    with torch.no_grad():
        t = [sam.image_encoder(x[0])]
    q = skb_quality(t, sam, t, 3)
    assert q["cosine"] == pytest.approx(1.0, abs=1e-6) and q["iou"] == pytest.approx(1.0)
    student_sam = copy.deepcopy(sam)
    student_sam.image_encoder = ResNetStudent("resnet18", 256)
    distil_encoder(student_sam.image_encoder, x, t, DistillConfig(steps=2, batch=1), tmp_path / "d")
    base = {"family": "sam", "embed_dim": arch.embed_dim, "depth": arch.depth, "num_heads": arch.num_heads,
            "global_attn_indexes": list(arch.global_attn_indexes)}
    path = save_skb(student_sam, base, {"kind": "student", **student_sam.image_encoder.settings()}, tmp_path / "s")
    loaded, loaded_arch = load_sam(path)
    assert "resnet18 student" in loaded_arch.describe()
    with torch.no_grad():
        emb = loaded.image_encoder(x[0])
    assert torch.equal(emb, student_sam.image_encoder.eval()(x[0]))
    alone = skb_quality([emb], sam, t, 3)
    assert alone["cosine"] < 1.0
    # the plan decodes the teacher's masks once: scoring a candidate against them decodes the candidate's alone
    reference = reference_masks(sam, t, 3)
    calls = []
    decode = skb_module._decode
    monkeypatch.setattr(skb_module, "_decode", lambda *a: calls.append(a[1]) or decode(*a))
    assert skb_quality([emb], sam, t, 3, reference) == alone
    assert len(calls) == 1 and calls[0] is emb


# -- the choice rule (lamsc.compress.choice) on hand-made candidate tables -----------------------------------

def _cand(name, latency, quality=None, params=1, **figures):
    from lamsc.compress.plan import Candidate

    return Candidate(name, 0.0, "fp32", cost=Cost(latency, 0.0, params, 1, 1),
                     quality={"psnr": quality, **figures} if quality is not None else figures)


def test_the_choice_is_the_best_quality_within_budget():
    from lamsc.compress.choice import Rule

    table = [_cand("teacher", 100, 24.0), _cand("fast", 30, 21.0), _cand("mid", 45, 22.5), _cand("slow", 60, 23.5)]
    choice = Rule("psnr").choose(table, Budget.parse("latency-ms=50"))
    assert choice.chosen.name == "mid" and choice.shortfall == ""  # slow and teacher are better, and over budget
    assert {n: v.describe() for n, v in choice.verdicts.items()} == {"teacher": "no", "fast": "yes", "mid": "yes",
                                                                     "slow": "no"}
    assert choice.verdicts["slow"].over == {"latency_ms": pytest.approx(60 / 50)}
    # every limit counts: a parameter limit only "fast" meets
    table[1].cost.params, table[2].cost.params = 10, 1000
    assert Rule("psnr").choose(table, Budget.parse("latency-ms=50,params=100")).chosen.name == "fast"


def test_the_pareto_front_drops_dominated_candidates_and_keeps_ties():
    from lamsc.compress.choice import Rule, pareto_front

    a, b = _cand("a", 10, 20.0), _cand("b", 20, 22.0)
    slower_worse = _cand("slower-worse", 25, 21.0)      # b is faster and better
    same_speed_worse = _cand("same-speed-worse", 10, 19.0)  # a: as fast, better
    twin = _cand("twin", 20, 22.0)                      # equal to b on both: neither dominates
    rejected = _cand("rejected", 1, 99.0)
    rejected.cost = None                                # a failed export takes no part
    table = [a, b, slower_worse, same_speed_worse, twin, rejected]
    assert [c.name for c in pareto_front(table, "psnr")] == ["a", "b", "twin"]
    choice = Rule("psnr").choose(table, Budget.parse("latency-ms=1000"))
    assert [c.name for c in choice.front] == ["a", "b", "twin"] and "rejected" not in choice.verdicts
    assert choice.chosen is b  # the best quality; twin ties with it on both figures and comes later


def test_equal_quality_goes_to_the_faster_candidate():
    from lamsc.compress.choice import Rule

    table = [_cand("slow", 40, 22.0), _cand("fast", 30, 22.0), _cand("worse", 10, 21.9)]
    assert Rule("psnr").choose(table, Budget.parse("latency-ms=50")).chosen.name == "fast"


def test_nothing_within_budget_names_the_budget_and_the_least_over():
    from lamsc.compress.choice import Rule

    table = [_cand("teacher", 100, 24.0), _cand("near", 55, 21.0), _cand("far", 80, 23.0)]
    choice = Rule("psnr").choose(table, Budget.parse("latency-ms=50"))
    assert choice.chosen is None and choice.closest.name == "near"
    assert choice.shortfall.startswith("no candidate meets the budget (latency-ms <= 50); closest is near at 55.0 ms")
    assert "relax the budget" in choice.shortfall


def test_the_codec_rule_does_not_choose_a_candidate_that_buys_psnr_with_bits():
    from lamsc.compress.plan import codec_rule

    teacher, fair = _cand("t", 100, 21.0, bits_x_teacher=1.0), _cand("fair", 40, 20.7, bits_x_teacher=1.03)
    greedy = _cand("greedy", 40, 21.5, bits_x_teacher=1.2)
    budget = Budget.parse("latency-ms=50")
    choice = codec_rule(0.05).choose([teacher, fair, greedy], budget)
    assert choice.chosen is fair and choice.shortfall == ""
    assert choice.verdicts["greedy"].describe() == "sends > +5%" and choice.verdicts["t"].describe() == "no"
    assert codec_rule(None).choose([teacher, fair, greedy], budget).chosen is greedy  # no rate limit: PSNR alone
    choice = codec_rule(0.05).choose([teacher, greedy], budget)
    assert choice.chosen is None and choice.closest is greedy  # within budget, the best there, over the rate
    assert "greedy 1.20x" in choice.shortfall and "--max-rate-increase" in choice.shortfall


def test_the_skb_rule_keeps_its_quality_floors():
    from lamsc.compress.skb import MIN_COSINE, SKB_RULE

    def enc(name, latency, cosine, iou):
        return _cand(name, latency, cosine=cosine, iou=iou)

    teacher, close, blurred = enc("teacher", 100, 1.0, 1.0), enc("close", 40, 0.97, 0.9), enc("blurred", 20, 0.99, 0.5)
    budget = Budget.parse("latency-ms=50")
    choice = SKB_RULE.choose([teacher, close, blurred], budget)
    assert choice.chosen is close  # blurred has the higher cosine and loses the masks
    assert choice.verdicts["blurred"].describe() == "IoU < 0.8"
    choice = SKB_RULE.choose([teacher, enc("drifted", 40, MIN_COSINE - 0.01, 0.9), blurred], budget)
    assert choice.chosen is None and choice.closest is blurred  # the best cosine within budget
    assert choice.shortfall.startswith("no candidate within the budget (latency-ms <= 50) keeps embedding cosine")
    assert "the best within it is blurred (cosine 0.9900, IoU 0.500)" in choice.shortfall
    assert choice.verdicts["drifted"].describe() == f"cosine < {MIN_COSINE}"


def test_the_report_table_says_why_each_candidate_was_not_chosen():
    from lamsc.compress.cost import Target
    from lamsc.compress.plan import Plan, codec_rule
    from lamsc.compress.report import table_rows

    table = [_cand(n, lat, q, ssim=0.8, bits_x_teacher=b) for n, lat, q, b in
             (("t", 100, 21.0, 1.0), ("fair", 40, 20.7, 1.03), ("greedy", 40, 21.5, 1.2), ("fast", 20, 19.0, 1.0))]
    budget = Budget.parse("latency-ms=50")
    plan = Plan(budget, Target("cpu"), table, codec_rule(0.05).choose(table, budget), "psnr", 0.05)
    rows = {r[0]: r[-2:] for r in table_rows(plan)}
    # t is dominated by greedy (faster and better); fair too (as fast, worse), and it is the one chosen
    assert rows == {"t": ["no", ""], "fair": ["yes", "chosen"], "greedy": ["sends > +5%", "pareto"],
                    "fast": ["yes", "pareto"]}


# -- the command -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    from lamsc.semcom.images import bundled_photos

    folder = tmp_path_factory.mktemp("photos")
    for p in bundled_photos(["astronaut", "coffee"]):
        Image.fromarray(p.pixels[::4, ::4]).save(folder / f"{p.name}.png")
    return folder


def test_unreachable_budget_is_refused_before_distillation(two_photos, tmp_path, capsys):
    """Below every candidate's lower bound: one line, exit 2, and no student distilled or scored."""
    code = main(["compress", "--repeats", "1", "--budget", "latency-ms=0.0001", "--ratios", "0,0.5",
                 "--precisions", "fp32,int8", "--steps", "2", "--data", str(two_photos), "--images", str(two_photos),
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no candidate can meet the budget") and "prune-0.50-int8" in last
    assert "Traceback" not in err
    assert not (tmp_path / "candidates" / "prune-0.50").exists() and not (tmp_path / "compress.json").exists()


def test_floors_bound_what_candidates_cost(two_photos, tmp_path):
    """The reachability bound never exceeds a candidate's real cost: params, MACs and bytes exactly, and
    latency under what the candidate measures."""
    from lamsc.compress.budget import Budget
    from lamsc.compress.cost import Target
    from lamsc.compress.plan import PlanConfig, pruned_within_reach, workload
    from lamsc.compress.prune import count_parameters
    from lamsc.semcom.images import iter_images

    cfg = PlanConfig(ratios=(0.0, 0.5), precisions=("fp32",), size=128)
    teacher, photos = load_model(), list(iter_images([two_photos]))
    student = prune_codec(teacher, 0.5)
    params = count_parameters(student)
    budget = Budget.parse(f"params={params}")  # exactly the pruned model's: within reach
    pruned = pruned_within_reach(teacher, budget, Target("cpu"), cfg, photos, tmp_path)
    assert count_parameters(pruned[0.5]) == params and pruned[0.0] is teacher
    # a budget the original itself meets: every ratio is still pruned for the plan to distil
    assert set(pruned_within_reach(teacher, Budget.parse("latency-ms=90%"), Target("cpu"), cfg, photos,
                                   tmp_path)) == {0.0, 0.5}
    assert workload(pruned[0.5], cfg)["work"] == workload(student, cfg)["work"]
    with pytest.raises(UserError, match="no candidate can meet.*prune-0.50-fp32"):
        pruned_within_reach(teacher, Budget.parse(f"params={params - 1}"), Target("cpu"), cfg, photos, tmp_path)


def test_infeasible_budget_exits_2_naming_the_closest(two_photos, tmp_path, capsys):
    # within the bound (the pruned model has 26% of the MACs: its fp32 floor is 13%), over what it measures
    code = main(["compress", "--repeats", "1", "--budget", "latency-ms=15%", "--ratios", "0.5", "--precisions", "fp32",
                 "--steps", "2", "--data", str(two_photos), "--images", str(two_photos), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no candidate meets the budget" in err and "closest is prune-0.50-fp32" in err
    res = json.loads((tmp_path / "compress.json").read_text())["results"]
    assert res["chosen"] is None and len(res["candidates"]) == 2
    teacher, pruned = res["candidates"]
    assert pruned["cost"]["macs"] < teacher["cost"]["macs"] and pruned["cost"]["params"] < teacher["cost"]["params"]
    assert (tmp_path / "pareto.png").is_file() and "| prune-0.50-fp32 |" in (tmp_path / "report.md").read_text()


def test_feasible_budget_writes_a_model_that_loads(two_photos, tmp_path, capsys):
    common = ["compress", "--repeats", "1", "--budget", "params=60%", "--ratios", "0.5", "--precisions", "fp32",
              "--steps", "2", "--data", str(two_photos), "--images", str(two_photos), "--out", str(tmp_path)]
    # two distillation steps leave the student's ASC depth off the teacher's: it sends a few percent more
    assert main(common + ["--max-rate-increase", "0.01"]) == 2
    assert re.search(r"sends over 1% more bits than the teacher \(prune-0\.50-fp32 \d+\.\d+x\)",
                     capsys.readouterr().err)
    code = main(common + ["--max-rate-increase", "1"])
    assert code == 0
    res = json.loads((tmp_path / "compress.json").read_text())["results"]
    assert res["chosen"]["name"] == "prune-0.50-fp32" and res["plan"]["repeats"] == 1  # timed as asked
    # the rate is the payloads' length: the chosen bundle's transmitter, run again here, sends the same bits
    from lamsc.compress.plan import link_quality
    from lamsc.export.bundle import load_bundle
    from lamsc.runtime.backends import OnnxRuntimeBackend
    from lamsc.semcom.images import iter_images
    from lamsc.semcom.skb import build_segmenter

    photos, seg = list(iter_images([two_photos])), build_segmenter(None)
    again = link_quality(OnnxRuntimeBackend(load_bundle(tmp_path / "bundle")), photos, seg, 10.0)
    q, t = res["chosen"]["quality"], res["teacher"]["quality"]
    assert q["per_image_bits"] == again["per_image_bits"] and all(b % 8 == 0 for b in q["per_image_bits"])
    assert q["bits_x_teacher"] == pytest.approx(q["bits"] / t["bits"], abs=1e-4) and t["bits_x_teacher"] == 1.0
    assert 1.01 < q["bits_x_teacher"] <= 2.0
    model = load_model(tmp_path / "model")
    assert model.config.trained["compressed"]["candidate"] == "prune-0.50-fp32"
    assert (tmp_path / "bundle" / "manifest.json").is_file()


def test_int8_candidates_are_calibrated_on_the_distillation_photographs(two_photos, tmp_path):
    from lamsc.semcom.images import bundled_photos

    scoring = tmp_path / "scoring"
    scoring.mkdir()
    for p in bundled_photos(["chelsea", "rocket"]):
        Image.fromarray(p.pixels[::4, ::4]).save(scoring / f"{p.name}.png")
    # what is checked is where calibration and scoring photographs come from, not the int8 graph's rate
    code = main(["compress", "--repeats", "1", "--budget", "bytes=50%", "--ratios", "0", "--precisions", "int8",
                 "--int8-max-drop", "0.3", "--max-rate-increase", "0.5", "--data", str(two_photos),
                 "--images", str(scoring), "--out", str(tmp_path / "out")])
    assert code == 0
    res = json.loads((tmp_path / "out" / "compress.json").read_text())["results"]
    assert res["chosen"]["name"] == "prune-0.00-int8"
    assert res["chosen"]["quality"]["images"] == ["chelsea", "rocket"]
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["int8"] == {"calibrated_on": ["astronaut", "coffee"], "max_drop_db": 0.3}
    assert manifest["verified_on"] == ["chelsea", "rocket"]


def test_skb_candidates_at_each_precision_are_scored_from_their_onnx_files(two_photos, tiny_sam_checkpoint, tmp_path):
    code = main(["compress", "--repeats", "1", "--sam", str(tiny_sam_checkpoint), "--budget", "bytes=50%",
                 "--ratios", "0", "--students", "128", "--precisions", "fp32,int8", "--steps", "2",
                 "--data", str(two_photos), "--images", str(two_photos), "--out", str(tmp_path)])
    res = json.loads((tmp_path / "compress.json").read_text())["results"]
    by_name = {c["name"]: c for c in res["candidates"]}
    assert list(by_name) == ["teacher-fp32", "teacher-int8", "resnet18-128-fp32", "resnet18-128-int8"]
    # The teacher's own ONNX export against its PyTorch embeddings: the same up to float rounding.
    assert by_name["teacher-fp32"]["quality"]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert by_name["teacher-fp32"]["quality"]["iou"] > 0.98
    int8 = by_name["teacher-int8"]
    assert 0.5 < int8["quality"]["cosine"] < 1.0 - 1e-5  # int8 rounding shows, the function survives
    assert int8["cost"]["bytes"] < 0.5 * by_name["teacher-fp32"]["cost"]["bytes"]
    quantised = onnx.load(str(tmp_path / "candidates" / "teacher" / "skb_encoder_int8.onnx"))
    assert count_qdq(quantised) > 0
    # Only the int8 teacher fits half the bytes with cosine >= 0.95: it is chosen and written with its ONNX.
    assert code == 0 and res["chosen"]["name"] == "teacher-int8"
    assert onnx.load(str(tmp_path / "skb_encoder.onnx")).graph.node == quantised.graph.node
    assert load_sam(tmp_path / "skb.safetensors")[0].image_encoder is not None


def test_a_resized_mobilesam_candidate_is_written_with_its_fine_tuned_neck(two_photos, mobilesam_checkpoint, tmp_path):
    code = main(["compress", "--repeats", "1", "--sam", str(mobilesam_checkpoint), "--budget", "latency-ms=60%",
                 "--ratios", "0", "--students", "", "--resize", "256", "--precisions", "fp32", "--steps", "2",
                 "--data", str(two_photos), "--images", str(two_photos), "--out", str(tmp_path)])
    res = json.loads((tmp_path / "compress.json").read_text())["results"]
    assert [c["name"] for c in res["candidates"]] == ["teacher-fp32", "tinyvit-256-fp32"]
    resized = res["candidates"][1]
    assert resized["cost"]["macs"] < 0.2 * res["candidates"][0]["cost"]["macs"]  # (256 / 1024)^2 of the tokens
    skb = tmp_path / "candidates" / "tinyvit-256" / "skb.json"
    assert json.loads(skb.read_text())["encoder"]["neck_grid"] == 48
    sam, arch = load_sam(skb)
    teacher, _ = load_sam(mobilesam_checkpoint)
    assert "TinyViT at 256" in arch.describe()
    # Only the neck was fine-tuned: the trunk's linear layers are still the teacher's.
    mlp = "encoder.layers.1.blocks.0.mlp.fc1.weight"
    assert torch.equal(sam.image_encoder.state_dict()[mlp], teacher.image_encoder.state_dict()[mlp[8:]])
    neck = "encoder.neck.0.weight"
    assert not torch.equal(sam.image_encoder.state_dict()[neck], teacher.image_encoder.state_dict()[neck[8:]])
    # The file is scored as deployed: its ONNX export gives the cosine the plan reports.
    from lamsc.compress.distill import embedding_cosine
    from lamsc.compress.skb import _raw, onnx_embeddings, sam_inputs
    from lamsc.semcom.images import iter_images

    x = sam_inputs(teacher, list(iter_images([two_photos])))
    with torch.no_grad():
        cosines = [embedding_cosine(sam.image_encoder(a), teacher.image_encoder(a)) for a in x]
        onnx = onnx_embeddings(tmp_path / "candidates" / "tinyvit-256" / "skb_encoder.onnx",
                               [_raw(teacher, a) for a in x])
    assert resized["quality"]["cosine"] == pytest.approx(sum(cosines) / len(cosines), abs=1e-4)
    torch.testing.assert_close(onnx[0], sam.image_encoder(x[0]).detach(), rtol=1e-3, atol=1e-3)
    assert (code == 0) == (res["chosen"] is not None)  # exit 2 when the quality floors are not met


# -- the Python call ---------------------------------------------------------------------------------------

def test_compress_to_budget_in_python_on_a_tiny_model(two_photos, tmp_path):
    from lamsc.compress import CompressConfig, compress_to_budget

    tiny = LamscModel(ModelConfig(channels=8, width=16, num_levels=4, segments=2))
    # A parameter budget: which candidates fit does not depend on this machine's speed.
    cfg = CompressConfig(budget="params=60%", model=tiny, out=tmp_path, ratios=(0.5,), precisions=("fp32",),
                         steps=2, data=[two_photos], images=[two_photos], max_rate_increase=None)
    assert "<LamscModel in memory>" in repr(cfg) and "Conv2d" not in repr(cfg)
    said = []
    result = compress_to_budget(cfg, progress=lambda message, step=None: said.append(message or step))
    assert result.chosen.name == "prune-0.50-fp32" and result.shortfall == ""
    assert [c.name for c in result.plan.candidates] == ["prune-0.00-fp32", "prune-0.50-fp32"]
    assert any(isinstance(m, str) and m.startswith("budget: params <= ") for m in said)
    assert any(isinstance(m, tuple) and m[2] and "loss" in m[2] for m in said)  # distillation steps
    for key in ("json", "report", "model", "bundle", "candidates"):
        assert result.paths[key].exists(), key
    assert result.figures["pareto"].is_file()
    on_disk = json.loads(result.paths["json"].read_text())["results"]
    assert on_disk["chosen"]["name"] == result.results["chosen"]["name"] == "prune-0.50-fp32"
    assert on_disk["checkpoint"] == "a model given in memory" and on_disk["distilled_on"] == [str(two_photos)]
    assert sorted(r["candidate"] for r in result.pareto) == sorted(on_disk["pareto"])
    assert all(set(r) >= {"candidate", "latency_ms", "params", "psnr"} for r in result.pareto)
    model = load_model(result.paths["model"])
    assert model.config.trained["compressed"]["candidate"] == "prune-0.50-fp32"
    assert sum(p.numel() for p in model.parameters()) <= 0.6 * sum(p.numel() for p in tiny.parameters())
    text = repr(result)
    assert text.startswith("CompressResult(target='cpu', budget='params <= ") and "chosen='prune-0.50-fp32'" in text
    assert "array(" not in text and "tensor(" not in text and len(text) < 400


@pytest.mark.parametrize("fields,message", [({"ratios": (0.5, 1.0)}, "prune ratios must be in [0, 1)"),
                                            ({"precisions": ("fp64",)}, "choose from fp32, fp16, int8"),
                                            ({"max_rate_increase": -0.1}, "is negative"),
                                            ({"budget": "latency=5"}, "is not KEY=VALUE"),
                                            ({"target": "pi"}, "unknown target"),
                                            ({"model": "m.safetensors", "sam": "sam.pt"}, "not both"),
                                            ({"sam": "sam.pt", "students": (-512,)}, "whole numbers")])
def test_a_bad_compress_config_is_refused_on_construction(fields, message):
    from lamsc.compress import CompressConfig

    with pytest.raises(UserError, match=re.escape(message)):
        CompressConfig(**{"budget": "latency-ms=50%", **fields})


def test_a_compress_config_adds_the_original_and_sorts_the_ratios():
    from lamsc.compress import CompressConfig
    from lamsc.compress.cost import Target

    cfg = CompressConfig(budget="params=400k", ratios=[0.4, 0.25], out="x")
    assert cfg.ratios == (0.0, 0.25, 0.4) and cfg.budget.limits == {"params": 4e5}
    assert cfg.target == Target("cpu") and cfg.out.name == "x" and cfg.part == "codec"


# -- quantisation ----------------------------------------------------------------------------------------

def _photo_crops(n=4, size=128):
    from lamsc.semcom.images import bundled_photos

    return [torch.from_numpy(p.pixels[:size, :size].copy()).permute(2, 0, 1)[None].float() / 255
            for p in bundled_photos()[:n]]


def test_accuracy_controlled_onnx_int8_keeps_the_reconstruction_within_the_drop(tmp_path):
    from lamsc.export.onnx_export import export_onnx
    from lamsc.export.quantise import quantise_onnx
    from lamsc.semcom.graphs import model_graphs
    from lamsc.semcom.metrics import psnr
    from lamsc.semcom.transmission import transmit_power

    model = load_model()
    graphs = model_graphs(model)
    rx = graphs["receiver"]
    feeds, photos = [], []
    for x in _photo_crops():
        masks = torch.zeros(1, model.config.segments, 128, 128)
        masks[:, 0] = 1
        with torch.no_grad():
            features, depth, _ = graphs["transmitter"](x, masks, torch.tensor([10.0]))
        levels = torch.clamp(torch.ceil(depth[:, 0] * model.config.num_levels), 1, model.config.num_levels).long()
        z = transmit_power(features.numpy(), levels.numpy(), model.config.num_levels)
        feeds.append({"z": z, "levels": levels.numpy(), "snr_db": np.array([10.0], np.float32)})
        photos.append(x)
    fp32 = export_onnx(rx, rx.spec(), (torch.from_numpy(feeds[0]["z"]), torch.from_numpy(feeds[0]["levels"]),
                                       torch.tensor([10.0])), tmp_path / "rx.onnx")

    def metric(session, feed, photo):
        image = session.run(["image"], feed)[0]
        return float(psnr(torch.from_numpy(image), photo).mean())

    out = quantise_onnx(fp32, tmp_path / "rx.int8.onnx", feeds, tensorrt=False, metric=metric,
                        validation=list(zip(feeds, photos)), max_drop=0.3)
    import onnxruntime as ort

    f32 = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    i8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    drop = np.mean([metric(f32, f, x) for f, x in zip(feeds, photos)]) - np.mean(
        [metric(i8, f, x) for f, x in zip(feeds, photos)])
    assert drop <= 0.3 + 1e-6
    import onnx

    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) > 0
