"""Training (three stages, resumable) and transmission through the command line, on tiny models."""

import json

import numpy as np
import pytest
import torch

from lamsc.cli import main
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.model import LamscModel, ModelConfig, cbr
from lamsc.semcom.payload import unpack
from lamsc.semcom.synthetic import SHAPE_CLASSES, make_shapes
from lamsc.semcom.training import PRESETS, TrainConfig, prepare, train
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    status = main(["train", "--preset", "tiny", "--synthetic", "12", "--width", "16", "--out", str(out)])
    assert status == 0
    return out


def test_training_writes_model_curves_and_a_finished_state(trained):
    assert (trained / "model.safetensors").is_file() and (trained / "curves.png").is_file()
    state = torch.load(trained / "trainer_state.pt", weights_only=True)
    assert state["stage"] == "done"
    steps = PRESETS["tiny"].steps
    assert [h["stage"] for h in state["history"]] == sum(([s] * n for s, n in steps.items()), [])
    config = json.loads((trained / "model.json").read_text())
    assert config["classes"] == list(SHAPE_CLASSES) and config["seg_classes"] == 4


def test_training_resumes_where_it_stopped(tmp_path):
    images = prepare(make_shapes(6), FallbackSegmenter(), 8)
    cfg = TrainConfig(steps={"asi": 2, "codec": 4, "asc": 2}, crop=32, batch=2, checkpoint_every=2)

    def stop_at_codec_3(stage, step, total, logs):
        if stage == "codec" and step == 3:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(LamscModel(ModelConfig(width=16)), images, cfg, tmp_path, stop_at_codec_3)
    saved = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert (saved["stage"], saved["step"]) == ("codec", 2)
    resumed = LamscModel(ModelConfig(width=16))
    state = train(resumed, images, cfg, tmp_path)
    assert state["stage"] == "done"
    assert [(h["stage"], h["step"]) for h in state["history"]] == \
        [("asi", 1), ("asi", 2), ("codec", 1), ("codec", 2), ("codec", 3), ("codec", 4), ("asc", 1), ("asc", 2)]
    # the same run uninterrupted: the same crops, noise and weights, bit for bit
    torch.manual_seed(0)
    whole = LamscModel(ModelConfig(width=16))
    uninterrupted = train(whole, images, cfg, tmp_path / "whole")
    assert [h["loss"] for h in uninterrupted["history"]] == [h["loss"] for h in state["history"]]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.gpu
def test_training_runs_on_a_gpu(tmp_path):
    images = prepare(make_shapes(4), FallbackSegmenter(), 8)
    cfg = TrainConfig(steps={"asi": 2, "codec": 3, "asc": 2}, crop=32, batch=2, checkpoint_every=2)
    model = LamscModel(ModelConfig(width=16))
    state = train(model, images, cfg, tmp_path, device="cuda")
    assert state["stage"] == "done" and all(np.isfinite(h["loss"]) for h in state["history"])
    assert next(model.parameters()).device.type == "cpu"  # handed back where it was built


def test_transmit_reports_the_real_payload(trained):
    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=64, seed=9)[0].pixels
    tx, rx = Transmitter(model, FallbackSegmenter()), Receiver(model)
    sent = tx.send(image, snr_db=10.0)
    assert unpack(sent.payload).height == 64
    result = transmit(image, tx, rx, Channel("awgn", 10.0), seed=0)
    assert result.bits == 8 * len(sent.payload)
    assert result.cbr == pytest.approx(cbr(result.channel_uses, 64, 64))
    assert result.reconstruction.image.shape == image.shape
    assert result.reconstruction.class_probs.shape == (3,)
    assert result.reconstruction.seg_map.shape == (64, 64)
    assert np.isfinite(result.psnr)


def test_one_snr_per_link(trained, caplog):
    """The transmitter encodes for the channel's SNR; its own, where given and different, is a stated mismatch."""
    from lamsc.errors import UserError

    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=64, seed=9)[0].pixels
    with pytest.raises(UserError, match="no SNR to encode for"):
        Transmitter(model, FallbackSegmenter()).send(image)
    follows = transmit(image, Transmitter(model, FallbackSegmenter()), Receiver(model), Channel("digital-qpsk", 3.0))
    assert unpack(Transmitter(model, FallbackSegmenter(), snr_db=3.0).send(image).payload).snr_db == 3.0
    assert not caplog.records and follows.bits > 0
    transmit(image, Transmitter(model, FallbackSegmenter(), snr_db=20.0), Receiver(model), Channel("awgn", 0.0))
    assert "encodes for 20 dB over a 0 dB channel" in caplog.text


@pytest.mark.parametrize("channel", ["awgn", "rayleigh", "digital-qpsk"])
def test_transmit_command(trained, tmp_path, capsys, channel):
    from PIL import Image

    Image.fromarray(make_shapes(1, size=64, seed=3)[0].pixels).save(tmp_path / "s.png")
    status = main(["transmit", str(tmp_path / "s.png"), "--model", str(trained / "model"), "--channel", channel,
                   "--snr", "30", "--baseline", "webp", "--out", str(tmp_path / "o"), "--json"])
    assert status == 0
    doc = json.loads(capsys.readouterr().out)["results"]
    (row,) = doc["images"]
    assert row["lamsc"]["bits"] > 0 and not row["lamsc"]["lost"]  # 30 dB: even uncoded QPSK is clean
    assert row["class"] in SHAPE_CLASSES
    assert row["baseline"]["name"].startswith("webp+")
    assert (tmp_path / "o" / "s_link.png").is_file()


def test_transmitter_payload_is_the_reference_payload(trained):
    from lamsc.semcom.model import pad_to_multiple
    from lamsc.semcom.payload import Features, pack
    from lamsc.semcom.transmission import segment_masks, to_tensor

    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=72, seed=5)[0].pixels
    masks = segment_masks(FallbackSegmenter().segment(image), model.config.segments)
    for asc in (True, False):
        tx = Transmitter(model, FallbackSegmenter(), asc=asc, snr_db=7.0)
        sent = tx.send(image)
        assert tx.pack_backend == "reference"  # no GPU here; on one, the CUDA kernel must give the same bytes
        # Encode again and write the payload with the payload module's own packer
        enc = model.encode(pad_to_multiple(to_tensor(image)), torch.from_numpy(masks)[None], torch.tensor([7.0]),
                           asc=asc)
        features = Features(enc["z"][0].detach().numpy(), enc["levels"][0].numpy(), 8)
        assert pack(features, 72, 72, 8, asc=asc, snr_db=7.0) == sent.payload


def test_fine_tuning_starts_from_the_given_weights(trained, tmp_path):
    out = tmp_path / "ft"
    status = main(["train", "--synthetic", "12", "--preset", "tiny", "--steps", "asi=0,codec=1,asc=0",
                   "--init", str(trained / "model"), "--out", str(out)])
    assert status == 0
    start, tuned = LamscModel.load(trained / "model"), LamscModel.load(out / "model")
    assert tuned.config.trained["init"] == str(trained / "model")
    assert torch.equal(start.asi.mlp[0].weight, tuned.asi.mlp[0].weight)  # ASI had no steps: untouched
    assert not torch.equal(start.decoder.out.weight, tuned.decoder.out.weight)  # one codec step moved it


def test_curves_plot_long_histories(tmp_path):
    from lamsc.semcom.training import plot_curves

    history = [{"stage": "asi", "step": i, "loss": 1.0 / i} for i in range(1, 40)]
    history += [{"stage": s, "step": i, "loss": 1.0 / i, "psnr": 10 + i / 10, "kept": 0.5}
                for s in ("codec", "asc") for i in range(1, 80)]
    plot_curves(history, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000
