"""Image loading: formats, modes, EXIF orientation, folders, VOC layout, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.images import BUNDLED_PHOTOS, bundled_photos, iter_images, load_image, load_voc


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix,kwargs", [(".png", {}), (".webp", {"lossless": True}), (".bmp", {})])
def test_lossless_formats_round_trip(rgb, tmp_path, suffix, kwargs):
    path = tmp_path / f"x{suffix}"
    Image.fromarray(rgb).save(path, **kwargs)
    assert np.array_equal(load_image(path), rgb)


def test_jpeg_loads_close_to_original(rgb, tmp_path):
    smooth = np.repeat(np.repeat(rgb[:3, :4], 8, 0), 8, 1)  # blocky content JPEG keeps well
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=98)
    out = load_image(tmp_path / "x.jpg")
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 6


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "RGBA"])
def test_any_mode_becomes_rgb(rgb, tmp_path, mode):
    im = Image.fromarray(rgb)
    if mode == "I;16":
        im = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        im = im.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    out = load_image(path)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()


def test_exif_orientation_is_applied(rgb, tmp_path):
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "o.png", exif=exif)
    out = load_image(tmp_path / "o.png")
    assert out.shape == (32, 24, 3)
    assert np.array_equal(out, np.rot90(rgb, k=-1))


def test_folder_yields_sorted_images_and_skips_other_files(rgb, tmp_path):
    for name in ("b", "a"):
        Image.fromarray(rgb).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [i.name for i in iter_images([tmp_path])] == ["a", "b"]


def test_voc_layout_reads_palette_labels(rgb, tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "JPEGImages" / "2007_000032.jpg")
    label = np.zeros((24, 32), np.uint8)
    label[5:10, 5:20] = 15
    label[0, :] = 255
    pal = Image.fromarray(label, "P")
    pal.putpalette([0, 0, 0, 128, 0, 0] * 128)  # VOC labels are palette PNGs: index = class
    pal.save(tmp_path / "SegmentationClass" / "2007_000032.png")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    (item,) = list(load_voc(tmp_path, "val"))
    assert item.name == "2007_000032" and np.array_equal(item.label, label)
    assert [i.name for i in iter_images([tmp_path])] == ["2007_000032"]


def test_corrupt_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")  # a JPEG's first marker, then nothing of one
    with pytest.raises(UserError, match="is cut short"):
        load_image(bad)
    assert main(["segment", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "bad.jpg" in err[-1] and "download it again" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_missing_image_is_reported(tmp_path):
    with pytest.raises(UserError, match="image not found"):
        load_image(tmp_path / "missing.png")


def test_bundled_photographs_are_rgb_photographs():
    photos = bundled_photos()
    assert [p.name for p in photos] == list(BUNDLED_PHOTOS)
    for p in photos:
        assert p.pixels.dtype == np.uint8 and p.pixels.ndim == 3 and p.pixels.shape[2] == 3
        assert min(p.pixels.shape[:2]) >= 256 and p.pixels.std() > 10  # real content, not a flat test card


def test_a_bundled_photograph_is_named_without_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = next(iter_images(["chelsea"], bundled_names=True))
    assert named.name == "chelsea" and np.array_equal(named.pixels, bundled_photos(["chelsea"])[0].pixels)
    with pytest.raises(UserError, match="image not found: chelsea; check the path$"):  # training data: no names
        next(iter_images(["chelsea"]))
    Image.new("RGB", (8, 6), "red").save(tmp_path / "chelsea", format="PNG")  # a file of that name comes first
    assert next(iter_images(["chelsea"], bundled_names=True)).pixels.shape == (6, 8, 3)
    with pytest.raises(UserError, match="or name a bundled photograph: astronaut"):
        next(iter_images(["chelsie"], bundled_names=True))
