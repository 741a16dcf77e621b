"""The codec: ASI integration, a mask network that really learns, power normalisation, model files."""

import numpy as np
import pytest
import torch
from torch import nn

from lamsc.errors import UserError
from lamsc.semcom.asc import MaskNetwork, shift_to_rate, straight_through_mask
from lamsc.semcom.asc_levels import depth_for_budget, depth_levels, levels_to_mask
from lamsc.semcom.asi import default_targets, importance_targets, integrate
from lamsc.semcom.channels import Channel
from lamsc.semcom.codec import BETA_MIN, GDN
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.config import ModelConfig, power_normalise
from lamsc.semcom.model import LamscModel, load_model
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LamscModel(ModelConfig(width=16, classes=["a", "b"], seg_classes=3)).eval()


def test_integration_is_a_float_mean_where_masks_overlap():
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :, :3] = 1
    masks[0, 1, :, 1:] = 1  # columns 1-2 are covered by both
    w = torch.tensor([[0.9, 0.8]])
    out = integrate(w, masks)[0, 0]
    assert torch.allclose(out[:, 0], torch.tensor(0.9)) and torch.allclose(out[:, 3], torch.tensor(0.8))
    assert torch.allclose(out[:, 1:3], torch.tensor(0.85))  # no uint8 overflow, stays in [0, 1]


def test_targets_from_an_importance_map_are_its_mean_per_segment():
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :2] = 1
    masks[0, 1, 2:] = 1
    imp = torch.zeros(1, 1, 4, 4)
    imp[0, 0, 0] = 1.0  # half of segment 0
    assert torch.allclose(importance_targets(imp, masks), torch.tensor([[0.5, 0.0]]))


def test_default_targets_prefer_a_contrasting_object_over_background():
    image = torch.full((1, 3, 32, 32), 0.2)
    image[..., 10:20, 10:20] = 0.9
    masks = torch.zeros(1, 3, 32, 32)
    masks[0, 0] = 1
    masks[0, 0, 10:20, 10:20] = 0  # background ring touches every border
    masks[0, 1, 10:20, 10:20] = 1  # bright object in the middle
    t = default_targets(image, masks)
    assert t[0, 1] > t[0, 0] and t[0, 2] == 0  # the empty slot scores nothing
    assert ((t >= 0) & (t <= 1)).all()


def test_levels_to_mask_keeps_the_first_channels():
    levels = torch.tensor([[[1, 4], [8, 2]]])
    mask = levels_to_mask(levels, 16, 8)
    assert mask.shape == (1, 16, 2, 2)
    assert torch.equal(mask.sum(1), (levels * 2).float())
    assert torch.equal(mask[0, :, 0, 1], torch.tensor([1.0] * 8 + [0.0] * 8))


def test_forcing_levels_on_an_encoding_is_encoding_with_those_levels(model):
    torch.manual_seed(1)
    image, masks, snr = torch.rand(2, 3, 32, 48), (torch.rand(2, 8, 32, 48) > 0.5).float(), torch.tensor([3.0, 17.0])
    levels = torch.randint(0, 9, (2, 4, 6))
    with torch.no_grad():
        direct = model.encode(image, masks, snr, levels=levels)
        forced = model.with_levels(model.encode(image, masks, snr), levels)
    for key in ("z", "features", "mask", "levels", "importance"):
        assert torch.equal(forced[key], direct[key]), key
    assert forced["depth"] is None and direct["depth"] is None


def test_mask_network_gets_gradients_and_learns_to_send_less():
    # The authors' hard threshold has no gradient, so their mask network never learns: ours must.
    torch.manual_seed(0)
    net = MaskNetwork(16)
    z, imp, snr = torch.randn(2, 16, 6, 6), torch.rand(2, 1, 6, 6), torch.tensor([5.0, 15.0])
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    kept = []
    for step in range(30):
        mask, _ = straight_through_mask(net(z, imp, snr), 16, 8)
        loss = mask.mean()  # a pure rate term
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert net.conv2.weight.grad.abs().sum() > 0
        opt.step()
        kept.append(float(mask.detach().mean()))
    assert kept[0] > 0.8 and kept[-1] < 0.3
    assert set(np.unique(mask.detach().numpy())) <= {0.0, 1.0}  # forward pass stays binary


def test_power_normalisation_over_kept_values():
    z = torch.randn(3, 16, 5, 5) * 7
    mask = levels_to_mask(torch.randint(1, 9, (3, 5, 5)), 16, 8)
    out = power_normalise(z, mask)
    for i in range(3):
        kept = out[i][mask[i] > 0]
        assert kept.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert (out[mask == 0] == 0).all()


def test_model_round_trips_through_its_files(model, tmp_path):
    path = model.save(tmp_path / "m")
    again = LamscModel.load(path)
    x, masks = torch.rand(1, 3, 32, 40), torch.zeros(1, 8, 32, 40)
    masks[0, 0, :16] = 1
    snr = torch.tensor([10.0])
    a, b = model.encode(x, masks, snr), again.encode(x, masks, snr)
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["levels"], b["levels"])
    da, db = model.decode(a["z"], a["levels"], snr), again.decode(b["z"], b["levels"], snr)
    assert torch.equal(da["image"], db["image"]) and torch.equal(da["seg_logits"], db["seg_logits"])
    assert da["image"].shape == x.shape and da["class_logits"].shape == (1, 2)
    assert again.config == model.config


def test_mismatched_or_missing_model_files_are_user_errors(model, tmp_path):
    model.save(tmp_path / "m")
    (tmp_path / "m.json").write_text(ModelConfig(width=24).to_json())
    with pytest.raises(UserError, match="does not match its config"):
        LamscModel.load(tmp_path / "m")
    with pytest.raises(UserError, match="model file not found"):
        LamscModel.load(tmp_path / "other")



def test_a_run_folder_loads_as_its_model(model, tmp_path):
    model.save(tmp_path / "run" / "model")  # what `lamsc train` and `lamsc federate` write
    assert load_model(tmp_path / "run").config == model.config
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="folder without model.safetensors"):
        load_model(tmp_path / "empty")


def test_half_precision_files_load_back_close(model, tmp_path):
    again = LamscModel.load(model.save(tmp_path / "h", half=True))
    assert (tmp_path / "h.safetensors").stat().st_size < 0.6 * model.save(tmp_path / "f").stat().st_size
    for name, tensor in model.state_dict().items():
        assert again.state_dict()[name].dtype == tensor.dtype
        assert torch.allclose(again.state_dict()[name], tensor, rtol=1e-3, atol=1e-4), name


def test_gdn_and_igdn_are_their_closed_forms():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    for inverse in (False, True):
        m = GDN(4, inverse=inverse).double()
        with torch.no_grad():
            m.norm.weight.uniform_(0.0, 0.3)
            m.norm.bias.uniform_(0.5, 1.5)
        gamma, beta = m.norm.weight[:, :, 0, 0], m.norm.bias.view(1, -1, 1, 1)
        s = torch.sqrt(beta + torch.einsum("ij,bjhw->bihw", gamma, x * x))  # Ballé et al. 2016, eq. 6
        assert torch.allclose(m(x), x * s if inverse else x / s, atol=1e-12)


def test_the_training_loop_keeps_gdn_in_its_domain(tmp_path):
    """Steps that drive gamma and beta negative: after each one the loop projects them back (gamma >= 0,
    beta >= BETA_MIN, the nearest point of the domain), so the normaliser never needs its clamp."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), GDN(4))
    gdn = model[1]
    with torch.no_grad():
        gdn.norm.bias.fill_(0.01)  # within one step of the boundary
    run = TrainingRun(tmp_path / "state.pt", model, torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step = lambda: (gdn.norm.weight.sum() + gdn.norm.bias.sum(), {})
    before = [p.detach().clone() for p in (gdn.norm.weight, gdn.norm.bias)]
    run.train(1, step, optimizer, 1.0, warmup=0)
    weight, bias = gdn.norm.weight.detach(), gdn.norm.bias.detach()
    assert weight.min() == 0.0 and bias.min() == BETA_MIN  # pushed below: projected onto the boundary
    assert not torch.equal(weight, before[0].clamp(min=0))  # the step moved them before the projection


def test_a_frozen_gdn_is_not_projected(tmp_path):
    """A GDN whose part is frozen keeps its loaded weights, even outside the domain; the trained one beside it
    is projected after the step."""
    model = nn.Sequential(GDN(4), GDN(4))
    frozen, trained = model
    with torch.no_grad():
        for gdn in model:
            gdn.norm.weight.fill_(-0.5)
            gdn.norm.bias.fill_(-1.0)
    frozen.requires_grad_(False)
    run = TrainingRun(tmp_path / "state.pt", model, torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.0)
    run.train(1, lambda: (trained.norm.weight.sum() + trained.norm.bias.sum(), {}), optimizer, 0.0, warmup=0)
    assert (frozen.norm.weight == -0.5).all() and (frozen.norm.bias == -1.0).all()
    assert (trained.norm.weight == 0.0).all() and (trained.norm.bias == BETA_MIN).all()


def test_a_depth_map_shifted_to_a_budget_keeps_its_order_and_fits():
    depth = np.random.default_rng(2).random((20, 30), np.float32)
    L, per_level = 8, 4
    for budget in (20 * 30 * per_level, 5000, 9000, 20 * 30 * 32 - 1, 20 * 30 * 32):
        shifted = depth_for_budget(depth, L, per_level, budget)
        levels = depth_levels(shifted, L)
        kept = per_level * int(levels.sum())
        assert kept <= budget and budget - kept < 3 * per_level  # the most that fits, to a level or two
        order = np.argsort(depth.ravel(), kind="stable")
        assert (np.diff(levels.ravel()[order]) >= 0).all()  # deeper stays deeper
    assert int(depth_levels(depth_for_budget(depth, L, per_level, 10), L).sum()) == 20 * 30  # floor: level 1


def test_a_transmitter_given_a_channel_budget_meets_it(model):
    image = (np.random.default_rng(3).random((192, 256, 3)) * 255).astype(np.uint8)
    seg = FallbackSegmenter()
    rx, channel = Receiver(model), Channel("awgn", 10.0)
    for target in (1 / 48, 1 / 32):
        result = transmit(image, Transmitter(model, seg, cbr=target), rx, channel)
        assert target * 0.98 < result.cbr <= target
    # below the floor (every position at its first level, and the side information) the floor is sent
    floor = transmit(image, Transmitter(model, seg, cbr=1 / 256), rx, channel)
    assert floor.cbr > 1 / 256 and floor.kept_ratio == 1 / model.config.num_levels
    with pytest.raises(UserError, match="needs ASC on"):
        Transmitter(model, seg, asc=False, cbr=1 / 48)
    with pytest.raises(UserError, match=r"give one in \(0, 1\]$"):
        Transmitter(model, seg, cbr=1.5)



def test_a_budget_counts_the_coded_depth_map_and_buys_features_with_it():
    from lamsc.semcom.mcs import channel_uses, side_channel_uses
    from lamsc.semcom.images import bundled_photos
    from lamsc.semcom.model import load_model
    from lamsc.semcom.payload import FLAG_DEPTH_CODED, side_bits
    from lamsc.semcom.transmission import model_inputs

    shipped, seg = load_model(None), FallbackSegmenter()
    image = bundled_photos(["coins"])[0].pixels
    h, w = image.shape[:2]
    x, masks = model_inputs(image, seg.segment(image), shipped.config.segments)
    out = Transmitter(shipped, seg).backend.run("transmitter", {"image": x, "masks": masks,
                                                                "snr_db": np.array([10.0], np.float32)})
    L, c = shipped.config.num_levels, shipped.config.channels
    for target in (1 / 64, 1 / 48, 1 / 24):
        sent = Transmitter(shipped, seg, cbr=target).send(image, 10.0)
        assert sent.payload[4] & FLAG_DEPTH_CODED
        uses = channel_uses(Channel("awgn", 10.0), 8 * len(sent.payload), sent.value_count, sent.side_bits)
        assert uses <= int(target * 3 * h * w) and uses > 0.98 * target * 3 * h * w
        # the same budget with the bit-packed depth map's side bits
        bound = side_bits(tuple(out["features"].shape[1:]), L)
        uncoded = depth_for_budget(out["depth"][0, 0], L, c // L,
                                   2 * (int(target * 3 * h * w) - side_channel_uses(bound + 7, 10.0)))
        assert sent.value_count > (c // L) * int(depth_levels(uncoded, L).sum())


def test_asc_sends_the_block_mean_of_its_depth_map_and_it_codes_shorter():
    from lamsc.semcom.asc_levels import DEPTH_BLOCK, block_mean, sent_levels
    from lamsc.semcom.images import bundled_photos
    from lamsc.semcom.payload import depth_map_section, parse
    from lamsc.semcom.transmission import model_inputs

    shipped, seg = load_model(None), FallbackSegmenter()
    image = bundled_photos(["chelsea"])[0].pixels
    tx = Transmitter(shipped, seg)
    x, masks = model_inputs(image, seg.segment(image), shipped.config.segments)
    out = tx.backend.run("transmitter", {"image": x, "masks": masks, "snr_db": np.array([10.0], np.float32)})
    L = shipped.config.num_levels
    levels = parse(tx.send(image, 10.0).payload).levels
    assert np.array_equal(levels, sent_levels(out["depth"][0, 0], L))
    assert np.array_equal(levels, depth_levels(block_mean(out["depth"][0, 0], DEPTH_BLOCK), L))
    # constant over each block, and shorter on the wire than the position-by-position map
    assert (levels[:DEPTH_BLOCK, :DEPTH_BLOCK] == levels[0, 0]).all()
    own = depth_levels(out["depth"][0, 0], L)
    assert len(depth_map_section(levels, L)[0]) < 0.5 * len(depth_map_section(own, L)[0])


def test_training_masks_follow_the_map_the_link_sends():
    from lamsc.semcom.asc import sent_depth
    from lamsc.semcom.asc_levels import DEPTH_BLOCK, block_mean

    torch.manual_seed(5)
    logits = (3 * torch.randn(2, 1, 21, 30)).requires_grad_()
    want = np.stack([block_mean(torch.sigmoid(logits[i, 0]).detach().numpy(), DEPTH_BLOCK) for i in range(2)])
    assert np.allclose(block_mean(torch.sigmoid(logits.detach()), DEPTH_BLOCK)[:, 0].numpy(), want, atol=1e-6)
    assert torch.allclose(sent_depth(logits, None, 8)[:, 0].detach(), torch.from_numpy(want), atol=1e-6)
    shifted = sent_depth(logits, torch.tensor([0.3, 0.7]), 8)
    kept = depth_levels(shifted.detach(), 8).float().mean((1, 2, 3)) / 8
    assert (kept <= torch.tensor([0.3, 0.7])).all() and (kept > torch.tensor([0.2, 0.6])).all()
    shifted.sum().backward()
    assert logits.grad.abs().sum() > 0  # the mask network learns through the block mean


def test_depth_maps_shifted_to_rates_keep_them_and_pass_gradients():
    torch.manual_seed(4)
    logits = (torch.randn(3, 1, 12, 16) - torch.tensor([0.0, 30.0, -30.0]).view(3, 1, 1, 1)).requires_grad_()
    rate = torch.tensor([0.2, 0.5, 0.9])  # the second map is saturated low, the third high: both still shift
    shifted = shift_to_rate(logits, rate, 8)
    kept = depth_levels(shifted.detach(), 8).float().mean((1, 2, 3)) / 8
    assert bool((kept <= rate).all()) and bool((rate - kept < 3 / (8 * 12 * 16)).all())  # within 3 level steps
    shifted.sum().backward()
    assert bool((logits.grad > 0).all())  # the sigmoid's slope reaches every position


def test_a_grey_photograph_comes_back_grey_and_no_further_off():
    """camera is greyscale: its payload says so and the receiver shows the nearest grey to what the decoder
    made, which removes the channel noise's colour; a colour photograph's payload does not say so."""
    from lamsc.semcom import metrics
    from lamsc.semcom.images import bundled_photos
    from lamsc.semcom.payload import FLAG_GREY, parse
    from lamsc.semcom.transmission import analog_link

    shipped = load_model()
    grey, colour = (p.pixels[:256, :256].copy() for p in bundled_photos(["camera", "chelsea"]))
    tx, rx, channel = Transmitter(shipped, FallbackSegmenter()), Receiver(shipped), Channel("awgn", 0.0)
    assert parse(tx.send(colour, 0.0).payload).grey is False
    payload = tx.send(grey, 0.0).payload
    assert parse(payload).grey and payload[4] & FLAG_GREY
    crossed = analog_link(payload, channel, seed=1)
    shown = rx.receive_features(crossed, 0.0).image
    decoded = rx.decode(crossed.features.values, crossed.features.levels, 256, 256, 0.0).image  # no flag
    assert (shown == shown[..., :1]).all() and not (decoded == decoded[..., :1]).all()
    assert np.abs(shown.astype(int) - decoded.astype(float).mean(-1, keepdims=True)).max() <= 0.5
    assert metrics.psnr(grey, shown) > metrics.psnr(grey, decoded)


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (38, 48), (64, 64)])
def test_the_sent_depth_map_is_the_mean_of_each_block(shape):
    from lamsc.semcom.asc_levels import block_mean

    depth = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    for size in (1, 3, 8):
        got = block_mean(depth, size)
        want = np.empty(shape)
        for i in range(0, shape[0], size):  # each block, edge blocks cut short, by a plain float64 mean
            for j in range(0, shape[1], size):
                want[i:i + size, j:j + size] = depth[i:i + size, j:j + size].astype(np.float64).mean()
        assert got.dtype == np.float32 and got.shape == shape
        assert np.allclose(got, want, atol=1e-6)
        # a batch of maps: each map's own blocks
        batch = block_mean(np.stack([depth, 1 - depth]), size)
        assert np.allclose(batch[0], got, atol=1e-6) and np.allclose(batch[1], 1 - want, atol=1e-6)
