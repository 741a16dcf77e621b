"""The plain Deep JSCC ablation: lamsc's own model with ASI and ASC off (segments=0, num_levels=1), its
training, and its rows in the sweeps beside lamsc, with the importance-weighted PSNR."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.mcs import side_channel_uses
from lamsc.semcom.model import LamscModel
from lamsc.semcom.training import TrainJob, new_model
from lamsc.semcom.transmission import Receiver, Transmitter, model_inputs, transmit

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import snr_sweep  # noqa: E402  (a benchmark script, imported from its folder as cbr_sweep does)

PLAIN = {"channels": 8, "segments": 0, "num_levels": 1}
HEADER_AND_CRC_BITS = 8 * (21 + 4)  # the payload's header and CRC-32 (docs/architecture.md, step 9)


def test_the_plain_model_trains_without_asi_and_keeps_every_feature(tmp_path, photo):
    # what benchmarks/gpu_train.sh runs with ABLATION=1 and STEPS: the variant's options, the steps as given
    status = main(["train", "--preset", "tiny", "--synthetic", "8", "--width", "16", "--channels", "8",
                   "--segments", "0", "--levels", "1", "--steps", "asi=3,codec=6,asc=4", "--minutes", "0",
                   "--device", "cpu", "--out", str(tmp_path), "--json"])
    assert status == 0
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert state["steps"] == {"asi": 0, "codec": 6, "asc": 4}
    assert [h["stage"] for h in state["history"]] == ["codec"] * 6 + ["asc"] * 4
    assert all(h["kept"] == 1.0 for h in state["history"])  # nested dropout and ASC have one level to choose
    model = LamscModel.load(tmp_path / "model")
    assert {k: getattr(model.config, k) for k in PLAIN} == PLAIN
    assert model.config.trained["recipe"]["steps"]["asi"] == 0
    untouched = new_model(model.config, 0).asi.stem.state_dict()  # the ASI stage never ran
    assert all(torch.equal(v, model.asi.stem.state_dict()[k]) for k, v in untouched.items())
    # no segment enters: the segment map (the loss weight) is zero, and ASC's own choice keeps everything
    image = photo[:100, :140]
    x, masks = map(torch.from_numpy, model_inputs(image, FallbackSegmenter().segment(image), 0))
    assert masks.shape[1] == 0
    with torch.no_grad():
        enc = model.encode(x, masks, torch.tensor([5.0]))
    assert not enc["integrated"].any() and bool((enc["levels"] == 1).all()) and bool((enc["mask"] == 1).all())
    # every feature sent: 8 channels at 1/8 resolution, two values per complex use, the header and CRC beside at
    # the coded rate for 10 dB (16-QAM 2/3: 8/3 bits per use)
    r = transmit(image, Transmitter(model, FallbackSegmenter(), asc=False), Receiver(model), Channel("awgn", 10.0),
                 seed=0)
    values = 8 * (104 // 8) * (144 // 8)
    assert r.kept_ratio == 1.0 and r.channel_uses == values // 2 + -(-HEADER_AND_CRC_BITS * 3 // 8)


@pytest.mark.parametrize("bad", [{"segments": 9}, {"segments": -1}, {"num_levels": 3}, {"num_levels": 0},
                                 {"minutes": -1.0}])
def test_a_job_refuses_segments_levels_and_budgets_it_cannot_take(tmp_path, bad):
    with pytest.raises(UserError):
        TrainJob(synthetic=2, out=tmp_path, **bad)


def test_importance_weights_are_the_mean_segment_weight_over_covering_segments(photo):
    torch.manual_seed(3)
    model = LamscModel(ModelConfig(width=16)).eval()
    image = photo[:120, :170]
    segments = FallbackSegmenter().segment(image)
    got = snr_sweep.importance_weights(model, FallbackSegmenter(), image)
    # reference: float64, one pixel at a time from the segment weights and the K largest masks
    x, masks = map(torch.from_numpy, model_inputs(image, segments, 8))
    with torch.no_grad():
        weights = model.asi.segment_weights(x, masks)[0].double().numpy()
    m = masks[0, :, :120, :170].numpy().astype(bool)
    ref = np.zeros((120, 170))
    for i, j in [(0, 0), (60, 85), (119, 169), (17, 150), (99, 3)]:
        covering = weights[m[:, i, j]]
        ref[i, j] = covering.mean() if covering.size else 0.0
        assert got[i, j] == pytest.approx(ref[i, j], abs=1e-6)
    assert got.shape == (120, 170) and got.min() >= 0 and got.max() <= 1 and got.std() > 0


def test_per_image_margins_count_photographs_not_means():
    # one photograph far below (the mean loses) while lamsc is above on the other two; lamsc-no-asc, at about
    # twice the channel uses, is no comparison at equal uses
    rows = [{"snr_db": 0.0, "image": i, "link": link, "psnr": p}
            for i, ours, theirs in (("a", 25.0, 24.0), ("b", 26.0, 25.5), ("c", 32.0, 38.0))
            for link, p in (("lamsc", ours), ("separation", theirs), ("lamsc-no-asc", ours + 1))]
    (m,) = snr_sweep.per_image_margins(rows)
    assert (m["link"], m["above"], m["images"], m["worst"]) == ("separation", 2, 3, "c")
    assert m["median_db"] == pytest.approx(0.5) and m["worst_db"] == pytest.approx(-6.0)


def test_the_sweeps_send_the_ablation_with_every_feature_and_weight_every_link(tmp_path, photo):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo[:96, :128]).save(images / "coffee.png")
    torch.manual_seed(0)
    LamscModel(ModelConfig(width=16)).save(tmp_path / "lamsc")
    LamscModel(ModelConfig(width=16, **PLAIN)).save(tmp_path / "plain")
    common = ["--model", str(tmp_path / "lamsc"), "--ablation", str(tmp_path / "plain"), "--images", str(images),
              "--baselines", "softcast"]
    assert snr_sweep.main(["--out", str(tmp_path / "snr"), "--snrs", "5", "--cbr", str(1 / 48), *common]) == 0
    rows = list(csv.DictReader(open(tmp_path / "snr" / "snr_sweep.csv")))
    assert [r["link"] for r in rows] == ["lamsc", "softcast", "lamsc-no-asc", "plain-jscc"]
    plain = rows[-1]
    side = side_channel_uses(HEADER_AND_CRC_BITS, 5.0)  # the header and CRC at QPSK 3/4 (4.5 dB): 134 uses
    assert float(plain["kept"]) == 1.0 and int(plain["channel_uses"]) == 8 * 12 * 16 // 2 + side == 768 + 134
    assert all(np.isfinite(float(r["psnr_w"])) for r in rows)
    text = (tmp_path / "snr" / "snr_sweep.md").read_text()
    assert "| plain-jscc | analog |" in text and "PSNR-w dB" in text and "8 channels, 0 segments" in text
    assert "| 5 | softcast | " in text.split("Photograph by photograph")[1]

    import cbr_sweep

    assert cbr_sweep.main(["--out", str(tmp_path / "cbr"), "--snr", "5", "--cbrs", str(1 / 48), *common]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cbr" / "cbr_sweep.csv")))
    assert [(r["budget"], r["link"]) for r in rows] == [(str(1 / 48), "lamsc"), (str(1 / 48), "softcast"),
                                                        ("", "plain-jscc")]
    assert "| every feature | plain-jscc |" in (tmp_path / "cbr" / "cbr_sweep.md").read_text()
