"""Federated split fine-tuning: FedAvg, adapters, the split step against the unsplit model, resuming, and a
2-client, 2-round run in Flower's simulation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lamsc.errors import UserError
from lamsc.federated.adapters import AdaptedConv2d, adapter_state, add_adapters, merge_adapters
from lamsc.federated.aggregation import fedavg
from lamsc.federated.partition import held_out, partition_by_content, resized, shifted, write_folder
from lamsc.federated.device import adapted_model
from lamsc.federated.split import (EVAL_RATE, device_forward, device_loss, device_recompute, draw_snr, server_forward,
                                   split_point, surrogate)
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.model import LamscModel
from lamsc.semcom.training import TrainConfig, link_loss

TINY = dict(channels=8, width=16, num_levels=4, segments=4)


def tiny_model(seed: int = 0, **heads) -> LamscModel:
    torch.manual_seed(seed)
    return LamscModel(ModelConfig(**TINY, **heads))


def test_fedavg_is_the_example_weighted_mean():
    parts = [{"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])},
             {"a": torch.tensor([4.0, 8.0]), "b": torch.tensor([[0.0]])},
             {"a": torch.tensor([0.0, -1.0]), "b": torch.tensor([[6.0]])}]
    avg = fedavg(parts, [1, 2, 1])
    # by hand: (1*[1,2] + 2*[4,8] + 1*[0,-1]) / 4 and (3 + 0 + 6) / 4
    assert torch.equal(avg["a"], torch.tensor([9 / 4, 17 / 4]))
    assert torch.equal(avg["b"], torch.tensor([[9 / 4]]))
    with pytest.raises(UserError):
        fedavg([parts[0], {"a": torch.zeros(3), "b": torch.zeros(1, 1)}], [1, 1])
    with pytest.raises(UserError):
        fedavg([], [])


def test_merged_adapters_compute_what_the_adapted_convolution_did():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 10, 5, stride=2, padding=2)
    adapted = AdaptedConv2d(conv, rank=3)
    torch.nn.init.normal_(adapted.adapter_up.weight)  # a non-zero update
    x = torch.randn(2, 6, 17, 13)
    expected = adapted(x)
    merged = adapted.merged()
    assert isinstance(merged, torch.nn.Conv2d)
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


def test_adapters_freeze_the_encoder_and_merge_back_to_a_plain_model(tmp_path):
    model = tiny_model()
    wrapped = add_adapters(model.encoder, rank=2)
    # 3 stages x (resample + a residual block's 2 convs), a second block in the last stage, out; no GDN normaliser
    assert "out" in wrapped and len(wrapped) == 12 and not any(n.endswith(".norm") for n in wrapped)
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_" in n for n in trainable)
    assert set(adapter_state(model)) == {"encoder." + n for n in trainable}
    assert merge_adapters(model.encoder) == 12
    model.save(tmp_path / "m")
    LamscModel.load(tmp_path / "m")  # an ordinary lamsc model again


@pytest.fixture
def float64():
    """float64 throughout (the SNRs the recipe draws included); restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_a_split_step_gives_the_unsplit_models_gradients_in_float64(float64):
    """Device front, server back, loss on the device: every parameter's gradient equals that of the same
    step of the centralised recipe (lamsc.semcom.training.link_loss) on the whole model."""
    model = tiny_model(classes=["a", "b", "c"], seg_classes=4).double()
    with torch.no_grad():  # the ASC mask network's output layer, so that the straight-through mask varies
        model.mask_net.conv2.bias.fill_(0.0)
    g = torch.Generator().manual_seed(3)
    b, s = 2, 32
    batch = {"x": torch.rand(b, 3, s, s, generator=g, dtype=torch.float64),
             "masks": (torch.rand(b, 4, s, s, generator=g) > 0.5).double(),
             "category": torch.tensor([2, 0]), "label": torch.randint(0, 4, (b, s, s), generator=g)}
    batch["label"][0, :4] = 255
    cfg = replace(TrainConfig(), rates=None, rate_weight=0.0)  # ASC at its own rate, as a device sends

    model.zero_grad()
    loss, _ = link_loss(model, batch, "asc", cfg, torch.Generator().manual_seed(7))
    loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    gen = torch.Generator().manual_seed(7)
    snr = draw_snr(model, b, gen)
    smashed, kept = device_forward(model, batch["x"], batch["masks"], snr)            # device
    received = {k: (v.detach().requires_grad_() if v.is_floating_point() else v) for k, v in smashed.items()}
    outputs = server_forward(model, received, snr, cfg.channel, gen)                   # server
    down = {k: v.detach().requires_grad_() for k, v in outputs.items()}
    device_value, _ = device_loss(down, batch, kept, cfg.importance_weight)             # device
    up = dict(zip(down, torch.autograd.grad(device_value, list(down.values()))))
    surrogate(outputs, up).backward()                                                  # server
    grads = {k: received[k].grad for k in ("z", "mask")}
    surrogate(smashed, grads).backward()                                               # device
    split = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    assert set(split) == set(reference)
    assert any(n.startswith("mask_net") for n in split) and any(n.startswith("classifier") for n in split)
    for n in reference:
        torch.testing.assert_close(split[n], reference[n], rtol=1e-9, atol=1e-12, msg=n)
    assert device_value.item() == pytest.approx(loss.item(), rel=1e-12)


def test_unknown_split_point_and_bad_config_are_user_errors(tmp_path):
    from lamsc.federated import FederateConfig

    with pytest.raises(UserError, match="transmitter"):
        split_point("asi")
    with pytest.raises(UserError, match="not found"):
        FederateConfig(data=[tmp_path / "missing"])
    with pytest.raises(UserError, match="multiple of 8"):
        FederateConfig(data=[tmp_path], crop=60)


def test_partition_deals_by_brightness_and_holds_out_every_fourth():
    photos = bundled_photos()[:8]
    parts = partition_by_content(photos, 2)
    assert sum(map(len, parts)) == 8
    assert max(p.pixels.mean() for p in parts[0]) <= min(p.pixels.mean() for p in parts[1])
    train, test = held_out(photos)
    assert len(test) == 2 and not {t.name for t in test} & {t.name for t in train}
    night = shifted(photos[:1], "night")[0]
    assert night.pixels.mean() < 0.6 * photos[0].pixels.mean()  # gamma 2.2: about half as bright
    blue_to_red = lambda p: p[..., 2].mean() / p[..., 0].mean()  # noqa: E731
    assert blue_to_red(night.pixels) > 1.2 * blue_to_red(photos[0].pixels)  # and bluer


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    """Two clients' folders of real photographs under two domain shifts, and a tiny base model."""
    root = tmp_path_factory.mktemp("fed")
    photos = resized(bundled_photos(), 48)
    folders = [write_folder(shifted(photos[:4], "night"), root / "night"),
               write_folder(shifted(photos[4:8], "warm"), root / "warm")]
    tiny_model(5).save(root / "base")
    return folders, root / "base", {f.name: photos for f in folders}


def test_a_resumed_run_equals_an_uninterrupted_one(clients, tmp_path):
    pytest.importorskip("flwr")
    from lamsc.federated.apps import local_exchange
    from lamsc.federated.server import SplitPlan, SplitServer

    folders, base_path, _ = clients
    base = LamscModel.load(base_path)
    plan = SplitPlan(base.config.to_json(), rank=2, rounds=2, local_steps=1, batch=2, crop=32)

    def run(out, until=None):
        server = SplitServer(base, plan, out)  # a fresh server and fresh devices, as after a restart
        return server.serve(local_exchange(folders, out), [0, 1], until_round=until), server

    straight, a = run(tmp_path / "straight")
    first, _ = run(tmp_path / "resumed", until=1)
    assert len(first["rows"]) == 2  # round 0 and round 1
    resumed, b = run(tmp_path / "resumed")
    for x, y in zip(a.merged_model().state_dict().values(), b.merged_model().state_dict().values()):
        assert torch.equal(x, y)
    assert [r["clients"]["0"]["psnr"] for r in resumed["rows"]] == [r["clients"]["0"]["psnr"] for r in straight["rows"]]
    assert a.merged_model().state_dict()["encoder.out.weight"].ne(base.state_dict()["encoder.out.weight"]).any()
    # round 0 is the no-fine-tuning baseline, scored in one process without any split exchange
    from lamsc.federated.baselines import run_baselines

    none = run_baselines(base, folders, plan, tmp_path / "baselines", ("none",))["none"]["clients"]
    for c in ("0", "1"):
        assert none[c]["psnr"] == pytest.approx(straight["rows"][0]["clients"][c]["psnr"], abs=1e-4)


def test_devices_on_the_same_images_draw_their_own_crops(clients, tmp_path):
    """Each device seeds its draws with its partition: two devices never train on the same crop sequence, and
    a device rebuilt from its folder draws what it drew before."""
    from lamsc.federated.device import Device
    from lamsc.federated.server import SplitPlan

    folders, base_path, _ = clients
    plan = SplitPlan(LamscModel.load(base_path).config.to_json(), rank=2, batch=2, crop=32).device_plan()
    crops = {}
    for name, partition in (("a", 0), ("b", 1), ("a-again", 0)):
        Device.write_plan(tmp_path / name, plan)
        crops[name] = Device(tmp_path / name, folders[0], partition).batch()["x"]
    assert torch.equal(crops["a"], crops["a-again"]) and not torch.equal(crops["a"], crops["b"])


def test_the_report_writes_an_undefined_metric_as_null_and_an_empty_cell(tmp_path):
    import csv

    from lamsc.federated.messages import ARRAY_KINDS
    from lamsc.federated.report import write_report

    nbytes = {k: 10 for k in ARRAY_KINDS}
    client = {"psnr": 21.5, "ms_ssim": float("nan"), "bytes_up": nbytes, "bytes_down": nbytes, "device_seconds": 1.0}
    paths = write_report([{"round": 1, "clients": {"0": client}, "server_seconds": 2.0}], tmp_path)
    row = json.loads(paths["json"].read_text())["rounds"][0]["clients"]["0"]
    assert row["ms_ssim"] is None and row["psnr"] == 21.5
    with open(paths["csv"], newline="") as f:
        cells = next(csv.DictReader(f))
    assert cells["ms_ssim"] == "" and float(cells["psnr"]) == 21.5 and cells["client"] == "0"


def test_two_clients_two_rounds_on_flower_keep_their_images(clients, tmp_path):
    """The Flower simulation: only activations, gradients and parameters leave a device; bytes are counted;
    the model written is a plain lamsc model."""
    pytest.importorskip("flwr")
    from lamsc.federated import FederateConfig, federate

    folders, base_path, photos = clients
    batch, crop, steps = 2, 32, 1
    result = federate(FederateConfig(data=folders, rounds=2, local_steps=steps, model=base_path, out=tmp_path,
                                     rank=2, batch=batch, crop=crop))
    assert [r["round"] for r in result.rows] == [0, 1, 2]
    for kind_by_action in result.crossed.values():
        assert set(kind_by_action) <= {"activations", "gradients", "parameters", "metrics"}
    assert set(result.crossed["train.forward"]["activations"]) == {"z", "mask", "levels"}
    assert set(result.crossed["train.loss"]) == {"gradients", "metrics"}
    adapters = {f"encoder.{n}" for n in adapter_state(_adapted(LamscModel.load(base_path), 2).encoder)}
    assert set(result.crossed["train.backward"]["parameters"]) == adapters
    c, h = TINY["channels"], crop // 8
    for row in result.rows[1:]:
        for r in row["clients"].values():
            assert r["bytes_up"]["gradients"] == steps * batch * 3 * crop * crop * 4   # d loss / d reconstruction
            assert r["bytes_down"]["gradients"] == steps * batch * 2 * c * h * h * 4   # d loss / d (z, mask)
            assert r["device_seconds"] > 0
    report = json.loads(result.report["json"].read_text())
    assert len(report["rounds"]) == 3 and result.report["png"].stat().st_size > 0
    assert result.report["csv"].read_text().count("\n") == 1 + 3 * 2
    model = LamscModel.load(result.model)
    assert model.config.trained["federated"]["rounds"] == 2
    # held-out images are scored at one kept fraction, whatever ASC would choose
    for row in result.rows:
        assert all(abs(r["kept"] - EVAL_RATE) < 0.03 for r in row["clients"].values())
    with torch.no_grad():
        enc = model.encode(torch.rand(1, 3, 32, 32), torch.ones(1, 4, 32, 32), torch.tensor([10.0]))
        assert model.decode(enc["z"], enc["levels"], torch.tensor([10.0]))["image"].shape == (1, 3, 32, 32)
    # no array a device sent equals one of its images (in the shapes the images travel as)
    sent_shapes = [tuple(shape) for action in result.crossed.values() for kind, arrays in action.items()
                   if kind != "metrics" for shape, _ in arrays.values()]
    for images in photos.values():
        assert not {(1, 3, *p.pixels.shape[:2]) for p in images} & set(sent_shapes)


def test_the_backward_recompute_of_the_encoder_alone_gives_the_full_fronts_gradients(float64):
    """A device's backward pass reruns only the encoder, with ASI's map and the mask kept from the forward pass:
    the adapters' gradients equal those through the whole front, in float64."""
    model = adapted_model({"model": tiny_model().config.to_json(), "rank": 2}).double()
    for n, p in model.named_parameters():  # adapters start at zero; move them so their gradients all matter
        if ".adapter_" in n:
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    masks = (torch.rand(2, 4, 32, 32, generator=g) > 0.5).double()
    snr = torch.tensor([3.0, 17.0], dtype=torch.float64)
    up = {"z": torch.randn(2, 8, 4, 4, generator=g, dtype=torch.float64),
          "mask": torch.randn(2, 8, 4, 4, generator=g, dtype=torch.float64)}
    trained = [p for n, p in model.named_parameters() if ".adapter_" in n]

    smashed, kept = device_forward(model, x, masks, snr)
    reference = torch.autograd.grad(surrogate(smashed, up), trained)
    with torch.no_grad():
        sent, kept = device_forward(model, x, masks, snr)
    again = device_recompute(model, x, kept, snr)
    torch.testing.assert_close(again["z"], sent["z"], rtol=0, atol=0)
    for got, want in zip(torch.autograd.grad(surrogate(again, up), trained), reference):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    model.mask_net.requires_grad_(True)
    with pytest.raises(ValueError, match="mask network"):
        device_recompute(model, x, kept, snr)


def test_held_out_scores_carry_ms_ssim_where_five_scales_fit():
    """The report's MS-SSIM is the metric's own on each held-out image cropped to its size; on images of 160
    pixels a side or less it is undefined and left out of the mean, never a figure from fewer scales."""
    from lamsc.federated.device import score
    from lamsc.semcom import metrics
    from lamsc.semcom.training import TrainingImage

    g = torch.Generator().manual_seed(0)
    images = [TrainingImage((torch.rand(h, w, 3, generator=g) * 255).byte().numpy(), np.zeros((h, w), np.uint8))
              for h, w in ((168, 200), (96, 120))]
    outputs = {f"{n}.image": torch.rand(1, 3, h + 8, w + 8, generator=g) for n, (h, w) in
               enumerate(i.pixels.shape[:2] for i in images)}  # padded, as the decoder returns them
    got = score(images, outputs, [0.5, 0.5], tiny_model().config)
    x = torch.from_numpy(images[0].pixels).permute(2, 0, 1)[None].float() / 255.0
    want = float(metrics.ms_ssim(outputs["0.image"][..., :168, :200], x)[0])
    assert got["ms_ssim"] == pytest.approx(want, rel=1e-6) and np.isfinite(want)
    assert np.isnan(float(metrics.ms_ssim(outputs["1.image"][..., :96, :120], torch.rand(1, 3, 96, 120))[0]))


def test_a_device_trains_only_its_adapters():
    plan = {"model": tiny_model().config.to_json(), "rank": 2}
    model = adapted_model(plan)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] in
                 split_point("transmitter").device_modules]
    assert trainable and all(".adapter_" in n for n in trainable)


def _adapted(model: LamscModel, rank: int) -> LamscModel:
    add_adapters(model.encoder, rank)
    return model


def test_class_folders_give_the_model_a_new_head_and_keep_every_other_weight():
    from lamsc.federated.simulation import with_classifier

    base = tiny_model(2)
    model = with_classifier(base, ["cat", "dog"], seed=0)
    assert model.config.classes == ["cat", "dog"] and model.classifier is not None
    kept = model.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(kept[name], value)


def test_flwr_run_reads_the_plan_from_the_run_config(clients, tmp_path):
    pytest.importorskip("flwr")
    from types import SimpleNamespace

    from lamsc.federated import apps

    _, base_path, _ = clients
    server = apps.run_config_server(SimpleNamespace(run_config={
        "model": str(base_path), "out": str(tmp_path), "rounds": 3, "local-steps": 2, "rank": 2, "clients": 2}))
    assert (server.plan.rounds, server.plan.local_steps, server.plan.rank, server.out) == (3, 2, 2, tmp_path)
    with pytest.raises(UserError, match="local-stepz"):
        apps.run_config_server(SimpleNamespace(run_config={"local-stepz": 2}))
    assert type(apps.clientapp).__name__ == "ClientApp" and type(apps.serverapp).__name__ == "ServerApp"


def test_the_loop_steps_until_a_bound_on_the_full_schedule_and_logs_after_each_step(tmp_path):
    from lamsc.semcom.loop import TrainingRun, learning_rate

    model = torch.nn.Linear(2, 1)
    run = TrainingRun(tmp_path / "state.pt", model, torch.Generator(), every=100)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rates, after = [], []

    def step():
        rates.append(opt.param_groups[0]["lr"])
        return model(torch.ones(1, 2)).sum(), {}

    run.train(10, step, opt, 0.1, until=3, after_step=lambda: after.append(model.weight.grad.clone()) or {"seen": 1.0})
    assert run.state["step"] == 3 and len(after) == 3
    assert rates == [learning_rate(0.1, s, 10) for s in range(3)]  # the 10-step schedule, not a 3-step one
    assert all(row["seen"] == 1.0 for row in run.state["history"])
    # a parameter group with its own peak rate follows the schedule scaled to it (a device's adapters)
    model = torch.nn.Linear(2, 1)
    run = TrainingRun(tmp_path / "groups.pt", model, torch.Generator(), every=100)
    opt = torch.optim.SGD([{"params": [model.weight], "peak_lr": 0.01}, {"params": [model.bias]}], lr=0.1)
    seen = []
    run.train(10, lambda: (seen.append([g["lr"] for g in opt.param_groups]), (model(torch.ones(1, 2)).sum(), {}))[1],
              opt, 0.1, until=3)
    assert seen == [[learning_rate(0.01, s, 10), learning_rate(0.1, s, 10)] for s in range(3)]
    run.save(opt)  # resumed with other rates, the caller's rates hold, not the saved ones
    run = TrainingRun(tmp_path / "groups.pt", model, torch.Generator(), every=100)
    opt = torch.optim.SGD([{"params": [model.weight], "peak_lr": 0.02}, {"params": [model.bias]}], lr=0.1)
    seen.clear()
    run.train(10, lambda: (seen.append([g["lr"] for g in opt.param_groups]), (model(torch.ones(1, 2)).sum(), {}))[1],
              opt, 0.1, until=4)
    assert seen == [[learning_rate(0.02, 3, 10), learning_rate(0.1, 3, 10)]]
    # after the backward pass and the clipping (weight and bias gradients are all 1: norm sqrt(3) clipped to 1)
    torch.testing.assert_close(after[0], torch.full((1, 2), 3 ** -0.5))


def test_a_clients_class_folders_take_the_federations_class_indices(tmp_path):
    from lamsc.federated.device import load_client_images
    from lamsc.semcom.synthetic import make_shapes

    shapes = make_shapes(4, size=16)
    write_folder([replace(s, name=f"{['b', 'c'][n % 2]}/{s.name}") for n, s in enumerate(shapes)], tmp_path)
    images = load_client_images(tmp_path, ["a", "b", "c"])  # this client has no "a"
    assert sorted((i.name.split("/")[0], i.category) for i in images) == [("b", 1), ("b", 1), ("c", 2), ("c", 2)]
    with pytest.raises(UserError, match="'c'"):
        load_client_images(tmp_path, ["a", "b"])
