"""Inputs as users have them, through the command a user would type: very large images, damaged files,
rasters that are not 8-bit, degenerate sizes and checkpoints saved by training tools. Each either works,
with what lamsc did said on stderr, or is refused in one line naming the cause and the fix."""

from __future__ import annotations

import argparse
import json
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.images import load_image
from lamsc.semcom.metrics import ms_ssim, psnr, ssim
from lamsc.semcom.sam_checkpoint import load_sam

LENIENT = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return status, captured.out, captured.err


def refusal(capsys, *args: str) -> str:
    """The one error line of a refused command (status 2)."""
    status, _, err = run(capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1, err
    return errors[0]


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR declares width x height (RGB, 8-bit) followed by almost no data, as a bomb is."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def photo_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    Image.fromarray(photo[:64, :80]).save(path)
    return path


# 1. Very large images: refused before decoding, the same way in every command


@pytest.mark.parametrize("command", [
    ["segment", "{img}", "--out", "{out}"],
    ["transmit", "{img}", "--out", "{out}"],
    ["profile", "--images", "{img}", "--energy", "model", "--repeats", "1", "--out", "{out}"],
    ["train", "--data", "{img}", "--preset", "tiny", "--out", "{out}"],
    ["export", "--images", "{img}", "--out", "{out}"],
    ["compress", "--budget", "latency-ms=50%", "--data", "{img}", "--images", "{img}", "--out", "{out}"],
])
def test_an_image_over_the_pixel_limit_is_refused_in_one_line_by_every_command(command, tmp_path, capsys):
    huge = tmp_path / "huge.png"
    png_header_only(huge, 14580, 14578)
    line = refusal(capsys, *(a.format(img=huge, out=tmp_path / "out") for a in command))
    assert "huge.png is 14580 x 14578 pixels (212,547,240)" in line
    assert "limit of 89,478,485" in line and "downscale it to 64%" in line


def test_the_limit_holds_where_pillow_only_warns(tmp_path, capsys):
    big = tmp_path / "big.png"
    png_header_only(big, 10000, 10000)  # 100 MP: over Pillow's limit, under twice it (its hard error)
    line = refusal(capsys, "segment", big, "--out", tmp_path)
    assert "10000 x 10000 pixels (100,000,000)" in line and "limit of 89,478,485" in line


# 2. Unreadable files: the hint fits the cause


def _damaged_png(path, photo):
    Image.fromarray(photo[:64, :80]).save(path)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):  # inside the compressed pixel data
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _cut(fmt):
    def make(path, photo):
        Image.fromarray(photo[:64, :80]).save(path, fmt)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return make


@pytest.mark.parametrize("name,make,expected", [
    ("cut.jpg", _cut("JPEG"), ["is cut short", "its JPEG data ends early", "download it again"]),
    ("cut.png", _cut("PNG"), ["is cut short", "its PNG data ends early", "download it again"]),
    ("damaged.png", _damaged_png, ["is damaged", "its PNG data does not decode", "export or download it again"]),
    ("header.png", lambda p, _: p.write_bytes(b"\x89PNG\r\n\x1a\n\0\0"), ["header is damaged or cut short"]),
    ("empty.jpg", lambda p, _: p.write_bytes(b""), ["is empty (0 bytes)"]),
    ("notes.png", lambda p, _: p.write_text("not an image\n"), ["not an image lamsc reads", "convert it"]),
    ("phone.jpg", lambda p, _: p.write_bytes(b"\0\0\0\x18ftypheic" + bytes(20)),
     ["is a HEIC/HEIF file", "convert it to an 8-bit PNG or JPEG"]),
])
def test_an_unreadable_image_gets_the_fix_for_its_cause(name, make, expected, tmp_path, photo, capsys):
    path = tmp_path / name
    make(path, photo)
    line = refusal(capsys, "segment", path, "--out", tmp_path)
    assert name in line and all(text in line for text in expected), line
    assert "pass a PNG, JPEG or WebP" not in line


# 3. Rasters that are not 8-bit: scaled by the stated rule, no data said, never silently replaced


def test_a_float_raster_with_nan_rows_is_stretched_and_its_no_data_reported(tmp_path, capsys):
    values = np.linspace(-20.0, 1000.0, 64 * 80, dtype=np.float32).reshape(64, 80)
    values[10:14] = np.nan  # a georeferenced raster's no-data rows
    path = tmp_path / "dem.tif"
    Image.fromarray(values).save(path)  # mode F: 32-bit float
    status, out, err = run(capsys, "transmit", path, "--json", "--out", tmp_path / "tx")
    assert status == 0
    assert "warning:" in err and "320 of 5120 pixels (6.2%) are NaN/inf" in err and "shown black" in err
    assert "note:" in err and "range -20 .. 1000 stretched to 0 .. 255" in err
    (row,) = json.loads(out)["results"]["images"]
    assert isinstance(row["lamsc"]["psnr"], float)

    pixels = load_image(path)
    finite = np.isfinite(values)
    expected = np.round((values[finite].astype(np.float64) + 20.0) * 255.0 / 1020.0)
    assert (pixels[10:14] == 0).all()
    assert np.array_equal(pixels[..., 0][finite], expected) and (pixels[..., 0] == pixels[..., 2]).all()


def test_bit_depths_follow_the_stated_rule(tmp_path):
    import tifffile

    grey = np.arange(64 * 80, dtype=np.int64).reshape(64, 80) % 256
    Image.fromarray((grey * 257).astype(np.uint16)).save(tmp_path / "16.png")  # 16-bit: value / 257
    assert np.array_equal(load_image(tmp_path / "16.png")[..., 0], grey)
    tifffile.imwrite(tmp_path / "unit.tif", (grey / 255.0).astype(np.float64))  # float in [0, 1]: x 255
    assert np.array_equal(load_image(tmp_path / "unit.tif")[..., 1], grey)
    elevation = (grey * 10 - 500).astype(np.int16)
    elevation[0, :5] = -9999  # GDAL_NODATA: no data, left out of the range
    tifffile.imwrite(tmp_path / "nodata.tif", elevation, extratags=[(42113, "s", 0, "-9999", True)])
    out = load_image(tmp_path / "nodata.tif")[..., 0]
    assert (out[0, :5] == 0).all() and out[0, 5] == 5 and out.max() == 255  # -500 .. 2050 to 0 .. 255


@pytest.mark.parametrize("name,array,expected", [
    ("void.tif", np.full((8, 9), np.nan, np.float32), "holds no valid value"),
    ("bands.tif", np.zeros((5, 8, 9), np.uint16), "has 5 bands; lamsc reads 1 (grey) or 3 (RGB)"),
])
def test_a_raster_with_nothing_to_show_is_refused_in_one_line(name, array, expected, tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / name, array, photometric="minisblack", planarconfig="separate")
    assert expected in refusal(capsys, "transmit", tmp_path / name, "--out", tmp_path)


# 4. Degenerate sizes: handled, with the metrics an image is too small for reported as undefined


@pytest.fixture
def small_images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "small"
    folder.mkdir()
    for name, (h, w) in {"dot": (1, 1), "row": (1, 300), "column": (300, 1), "tile": (7, 9),
                         "window": (11, 11)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_metrics_are_undefined_below_their_window():
    x = torch.rand(1, 3, 10, 400)
    assert np.isnan(ssim(x, x)).all() and np.isnan(ms_ssim(x, x)).all()
    assert np.isfinite(psnr(x, x * 0.9)).all()
    y = torch.rand(1, 3, 11, 11)
    assert ssim(y, y).item() == pytest.approx(1.0, abs=1e-6)


def test_transmit_reports_undefined_metrics_as_null_and_n_a(small_images, tmp_path, capsys):
    status, out, _ = run(capsys, "transmit", small_images, "--json", "--out", tmp_path / "tx")
    assert status == 0
    rows = {r["image"]: r["lamsc"] for r in json.loads(out)["results"]["images"]}
    assert set(rows) == {"dot", "row", "column", "tile", "window"}
    for name, r in rows.items():
        assert isinstance(r["psnr"], float) and r["ms_ssim"] is None
        assert (r["ssim"] is None) == (name != "window")
    status, out, _ = run(capsys, "transmit", small_images / "dot.png", "--out", tmp_path / "tx")
    assert status == 0 and "n/a" in out and "nan" not in out


def test_segment_takes_any_size_with_the_fallback_and_with_sam(small_images, tiny_sam_checkpoint, tmp_path, capsys):
    strip = small_images / "strip.png"  # 1 x 3000: SAM's resize to 1024 would leave it no row at all
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1, 3000, 3), dtype=np.uint8)).save(strip)
    status, out, _ = run(capsys, "segment", small_images, "--json", "--out", tmp_path / "fb")
    assert status == 0 and len(json.loads(out)["results"]["images"]) == 6
    images = [small_images / "dot.png", strip]
    status, out, _ = run(capsys, "segment", *images, "--checkpoint", tiny_sam_checkpoint, "--json",
                         "--out", tmp_path / "sam", *LENIENT)
    assert status == 0
    results = {r["image"]: r for r in json.loads(out)["results"]["images"]}
    assert results["dot"]["image_size"] == [1, 1] and results["strip"]["image_size"] == [1, 3000]
    for r in results.values():
        assert all(0 <= a <= r["image_size"][0] * r["image_size"][1] for a in r["areas"])


def test_profile_takes_degenerate_sizes_on_torch_and_onnxruntime(small_images, tmp_path, capsys):
    images = [small_images / "dot.png", small_images / "row.png"]
    bundle = tmp_path / "bundle"
    status, _, _ = run(capsys, "export", "--out", bundle, *[a for i in images for a in ("--images", i)])
    assert status == 0  # verified against PyTorch on these two
    for source in ([], [bundle]):
        status, out, _ = run(capsys, "profile", *source, *[a for i in images for a in ("--images", i)],
                             "--energy", "model", "--repeats", "1", "--json", "--out", tmp_path / "p")
        assert status == 0
        result = json.loads(out)["results"]
        assert result["backend"].startswith("onnxruntime" if source else "torch")
        assert [r["image"] for r in result["images"]] == ["dot", "row"]
        assert all(r["lamsc"]["ssim"] is None and r["lamsc"]["psnr"] > 0 for r in result["images"])
        json.loads((tmp_path / "p" / "profile.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_a_side_over_a_formats_limit_is_downscaled_or_refused(tmp_path, capsys):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 16400, 3), np.uint8)).save(strip)  # over WebP's 16383, under JPEG's 65500
    status, out, err = run(capsys, "transmit", strip, "--baseline", "webp", "--json", "--out", tmp_path)
    (row,) = json.loads(out)["results"]["images"]
    (webp,) = row["baselines"]
    assert status == 0 and not webp["lost"] and not row["lamsc"]["lost"]
    assert webp["detail"].startswith("webp q100 16383x1 of 16400x1")  # downscaled to WebP's longest side
    Image.fromarray(np.zeros((1, 65600, 3), np.uint8)).save(strip)
    line = refusal(capsys, "profile", "--images", strip, "--energy", "model", "--out", tmp_path)
    assert "strip is 65600 x 1 pixels" in line and "at most 65500 pixels a side" in line


# 5. Checkpoints saved by training tools: unwrapped, and the note says what was removed


def test_a_dataparallel_mobilesam_checkpoint_segments(mobilesam_checkpoint, photo_file, tmp_path, capsys):
    state = torch.load(mobilesam_checkpoint, weights_only=True)
    wrapped = tmp_path / "mobile_sam_dp.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    status, out, err = run(capsys, "segment", photo_file, "--checkpoint", wrapped, "--json", "--out", tmp_path,
                           *LENIENT)
    assert status == 0
    assert json.loads(out)["results"]["segmenter"].startswith("MobileSAM vit_t (TinyViT) from mobile_sam_dp.pt")
    assert "note:" in err and "removed the prefix 'module.' (DataParallel / DistributedDataParallel)" in err


@pytest.mark.parametrize("wrap,said", [
    (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, "torch.compile's '_orig_mod.'"),
    (lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()}, "prefix 'module.'"),
    (lambda sd: {"state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "criterion.weight": torch.ones(2)},
                 "epoch": 3, "global_step": 120}, "prefix 'model.' (a LightningModule"),
    (lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1,
                 "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, "'model_state_dict' entry"),
    (lambda sd: {"state_dict": sd, "args": argparse.Namespace(lr=1e-3), "epoch": 9}, "'state_dict' entry"),
    (lambda sd: {"module": sd, "buffer_names": []}, "'module' entry"),
])
def test_wrapped_checkpoints_load_the_same_weights(wrap, said, tiny_sam_checkpoint, tmp_path, caplog):
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(state), path)
    with caplog.at_level("INFO", logger="lamsc"):
        model, _ = load_sam(path)
    assert said in caplog.text
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_checkpoints_that_cannot_be_unwrapped_say_what_they_hold(tiny_sam_checkpoint, tmp_path, capsys):
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    torch.save({**{f"student.{k}": v for k, v in state.items()}, **{f"teacher.{k}": v for k, v in state.items()}},
               tmp_path / "two.pth")
    line = refusal(capsys, "segment", "x.png", "--checkpoint", tmp_path / "two.pth")
    assert "under 2 prefixes ('student.', 'teacher.')" in line and "save the one you want alone" in line
    torch.save({k: v for k, v in state.items() if k.startswith("image_encoder.")}, tmp_path / "encoder.pth")
    assert "encoder-only checkpoint" in refusal(capsys, "segment", "x.png", "--checkpoint", tmp_path / "encoder.pth")


@pytest.mark.parametrize("name,content,expected", [
    ("empty.pt", b"", "is empty (0 bytes)"),
    ("notes.pth", b"a text file\n", "is not a PyTorch checkpoint"),
    ("picture.pth", b"\x89PNG\r\n\x1a\n" + bytes(40), "it looks like a PNG image"),
])
def test_a_file_that_is_no_checkpoint_is_one_line(name, content, expected, tmp_path, capsys):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=re.escape(expected)):
        load_sam(tmp_path / name)
    assert expected in refusal(capsys, "segment", "x.png", "--checkpoint", tmp_path / name)
