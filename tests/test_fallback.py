"""The weight-free fallback segments every bundled photograph sensibly (its speed: lamsc profile's segment stage)."""

import numpy as np
import pytest

from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.segments import mask_boxes


@pytest.mark.parametrize("photo", bundled_photos(), ids=lambda p: p.name)
def test_fallback_partitions_each_photo_into_a_sensible_number_of_regions(photo):
    segmenter = FallbackSegmenter()
    segments = segmenter.segment(photo.pixels)
    assert 5 <= len(segments) <= 200, len(segments)
    # Regions tile the image: every pixel in exactly one mask.
    assert segments.masks.shape[1:] == photo.pixels.shape[:2]
    assert (segments.masks.sum(0) == 1).all()
    assert np.array_equal(segments.areas, segments.masks.sum((1, 2)))
    assert ((segments.scores >= 0) & (segments.scores <= 1)).all()


def test_no_checkpoint_means_the_announced_fallback():
    segmenter = build_segmenter(None)
    assert "fallback" in segmenter.name and "no checkpoint" in segmenter.name


def test_mask_boxes_against_a_loop_reference():
    rng = np.random.default_rng(1)
    masks = rng.random((20, 13, 17)) > 0.97
    masks[3] = False  # an empty mask
    boxes = mask_boxes(masks)
    for m, b in zip(masks, boxes):
        if not m.any():
            assert tuple(b) == (0, 0, 0, 0)
            continue
        ys, xs = np.nonzero(m)
        assert tuple(b) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_cached_segmenter_segments_each_distinct_image_once():
    from lamsc.semcom.segmenter import CachedSegmenter

    calls = []

    class Counting:
        name = "counting"

        def segment(self, image):
            calls.append(image.copy())
            return FallbackSegmenter().segment(image)

    seg = CachedSegmenter(Counting())
    a = np.zeros((16, 24, 3), np.uint8)
    b = a.copy()
    b[3, 4, 1] = 1  # one value differs
    first = seg.segment(a)
    assert seg.segment(a.copy()) is first and len(calls) == 1  # the same pixels, another array
    assert seg.segment(b) is not first and len(calls) == 2
    assert seg.segment(a[:8]) is not first and len(calls) == 3 and seg.name == "counting"
