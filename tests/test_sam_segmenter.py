"""SAM and MobileSAM checkpoints: built by the official builders, saved, loaded back through lamsc."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.sam_checkpoint import infer_architecture, load_sam
from lamsc.semcom.segmenter import MaskGenerationOptions
from lamsc.semcom.skb import build_segmenter

# Random weights rate their own masks poorly: keep every mask so there is something to check.
LENIENT = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]


def _check_against_masks(result: dict, overlay_size) -> None:
    assert result["count"] >= 1
    assert Image.open(result["overlay"]).size == overlay_size


@pytest.mark.parametrize("builder,expected", [("build_sam_vit_b", "vit_b"), ("build_sam_vit_l", "vit_l"),
                                              ("build_sam_vit_h", "vit_h")])
def test_official_sam_architectures_are_recognised(builder, expected):
    import segment_anything

    with torch.device("meta"):  # shapes only: no memory for vit_h's 630M parameters
        model = getattr(segment_anything, builder)()
    assert infer_architecture(model.state_dict()).model_type == expected


@pytest.mark.parametrize("fixture,family", [("tiny_sam_checkpoint", "SAM custom ViT"),
                                            ("mobilesam_checkpoint", "MobileSAM vit_t")])
def test_segment_command_loads_official_checkpoint(fixture, family, request, photo, tmp_path, capsys):
    ckpt = request.getfixturevalue(fixture)
    Image.fromarray(photo).save(tmp_path / "coffee.jpg", quality=95)
    status = main(["segment", str(tmp_path / "coffee.jpg"), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "out"), "--json", *LENIENT])
    assert status == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "segment"
    assert doc["results"]["segmenter"].startswith(family)
    (result,) = doc["results"]["images"]
    assert result["image_size"] == [400, 600]
    _check_against_masks(result, (600, 400))


@pytest.mark.parametrize("fixture", ["tiny_sam_checkpoint", "mobilesam_checkpoint"])
def test_masks_are_image_sized_and_agree_with_boxes_and_areas(fixture, request, photo):
    segmenter = build_segmenter(request.getfixturevalue(fixture), options=MaskGenerationOptions(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0), device="cpu")
    segments = segmenter.segment(photo)
    assert len(segments) >= 1
    assert segments.masks.shape[1:] == photo.shape[:2]
    for mask, box, area in zip(segments.masks, segments.boxes, segments.areas):
        ys, xs = np.nonzero(mask)  # independent of both SAM's and lamsc's box code
        assert area == mask.sum()
        assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_loaded_weights_are_the_saved_weights(tiny_sam_checkpoint):
    model, arch = load_sam(tiny_sam_checkpoint, "auto")
    saved = torch.load(tiny_sam_checkpoint, weights_only=True)
    assert arch.model_type == "custom" and arch.num_heads == 2 and arch.global_attn_indexes == (1,)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_missing_checkpoint_is_one_clear_line(tmp_path, capsys):
    status = main(["segment", "x.png", "--checkpoint", str(tmp_path / "nope.pth")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "checkpoint not found" in err and "nope.pth" in err


def test_truncated_checkpoint_is_reported(mobilesam_checkpoint, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(mobilesam_checkpoint.read_bytes()[: 1 << 20])
    with pytest.raises(UserError, match="truncated"):
        load_sam(cut)


def test_wrong_model_type_names_the_types_that_fit(mobilesam_checkpoint, tiny_sam_checkpoint):
    with pytest.raises(UserError, match=r"MobileSAM vit_t .*not vit_b.*--model-type vit_t"):
        load_sam(mobilesam_checkpoint, "vit_b")
    with pytest.raises(UserError, match=r"custom ViT.*not vit_h.*--model-type auto"):
        load_sam(tiny_sam_checkpoint, "vit_h")


def test_checkpoint_that_is_not_a_sam_model(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError, match="not a SAM or MobileSAM checkpoint"):
        load_sam(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a module object, not tensors
    with pytest.raises(UserError, match="safe loading refuses"):
        load_sam(path)


@pytest.mark.parametrize("field,value", [("points_per_side", 0), ("points_per_batch", 0), ("min_mask_region_area", -1),
                                         ("crop_n_layers", -1), ("max_segments", 0)])
def test_mask_generation_counts_below_their_least_are_refused(field, value):
    with pytest.raises(UserError, match=f"{field} = {value}: give a whole number of at least {value + 1}"):
        MaskGenerationOptions(**{field: value})
    assert MaskGenerationOptions(**{field: value + 1}).to_dict()[field] == value + 1
