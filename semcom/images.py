"""Images in, as RGB uint8 arrays: files, folders, VOC-layout datasets and the bundled photographs.

Every command reads image files through ``load_image``, so each of them treats an image the same way:

- Size: images up to Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485
  pixels, about 89.5 MP) load at full size. Larger ones are refused in one line naming their size, the
  limit and the downscale that fits; the size comes from the header, so nothing is decoded first.
- Bit depth: 8-bit modes (L, P, RGB, RGBA, CMYK, YCbCr, ...) as Pillow converts them to RGB, transparency
  composited over white. 16-bit unsigned values are divided by 257 and rounded (65535 -> 255; Pillow
  reads 16-bit RGB PNG/TIFF the same way). Other integer and float rasters (int16/int32 elevations,
  float32 reflectances) have no fixed range: floats that all lie in [0, 1] are multiplied by 255,
  anything else is stretched linearly from its own minimum (0) to its maximum (255; a constant image
  is black). A note on stderr says which rule applied and the range it mapped.
- No data: NaN, +-inf and the value a TIFF declares as GDAL_NODATA are no data. They are left out of
  the range and shown black (0), with a warning counting them; an image with no valid value is refused.
- Bands: TIFFs Pillow cannot read (float64, multi-band float or 16-bit rasters) are read by tifffile;
  1 band is grey, 3 are RGB, 2 or 4 grey or RGB plus the alpha the file declares. Other band counts
  are refused, naming the bands to pick.
- Any file that cannot be read is one UserError whose fix fits its cause: missing, empty, not an image,
  a format Pillow lacks (HEIC, AVIF, JPEG XL), cut short, damaged, or a variant Pillow cannot decode.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lamsc.errors import UserError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R, G, B, as Pillow's convert("L")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_GDAL_NODATA = 42113  # the TIFF tag GDAL writes a raster's no-data value into, as text
_FIX_CONVERT = "convert it to an 8-bit PNG or JPEG"

log = logging.getLogger(__name__)

# scikit-image ships these photographs inside its wheel, so they load with no network.
BUNDLED_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
    "retina",
    "rocket",
)


@dataclass(frozen=True)
class NamedImage:
    """An RGB uint8 image of shape (H, W, 3) with the name it came from."""

    name: str
    pixels: np.ndarray
    label: np.ndarray | None = None  # (H, W) class indices, 255 = void, where the data carries one
    category: int | None = None      # image class index, where the data carries one


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), upright per its EXIF tag, by the rules in this module's
    docstring (size limit, bit depth, no data, bands).

    Raises UserError (one line: the cause and its fix) for a file that is missing, too large or unreadable.
    """
    return read_image(Path(path), _pil_rgb, _raster_rgb)


def load_grey(path: str | Path) -> np.ndarray:
    """Read an image file as greyscale uint8 (H, W): 8-bit modes as Pillow's ``convert("L")``, higher bit
    depths by ``load_image``'s rules. Raises UserError as ``load_image`` does."""
    def pil_grey(im: Image.Image, path: Path, nodata: float | None) -> np.ndarray:
        if im.mode in _HIGH_DEPTH_MODES:
            return _to_uint8(np.asarray(im), path, nodata)
        return np.asarray(im.convert("L"), dtype=np.uint8)

    return read_image(Path(path), pil_grey, lambda *args: _luma(_raster_rgb(*args)))


def read_image(path: Path, from_pil: Callable[[Image.Image, Path, float | None], np.ndarray],
               from_raster: Callable[..., np.ndarray] | None = None) -> np.ndarray:
    """Open ``path`` with Pillow and return ``from_pil(image, path, nodata)``; for a TIFF Pillow cannot read (or
    reads fewer bands than it holds), ``from_raster(array, alpha, path, nodata)`` on tifffile's array.

    Every failure is a one-line UserError whose fix fits the cause (see ``_unreadable``).
    """
    if not path.is_file():
        raise UserError(f"image not found: {path}; check the path")
    fmt = ""
    try:
        with warnings.catch_warnings(), _quiet("tifffile"):
            warnings.simplefilter("ignore", UserWarning)  # decoders' remarks on damaged metadata: the error says it
            # Pillow only warns between its limit and twice it; lamsc refuses from the limit on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(path)
            except UnidentifiedImageError as unidentified:
                if from_raster is None or not _is_tiff(path):
                    raise
                fmt = "TIFF"
                try:
                    return _read_raster(path, from_raster)
                except (UserError, MemoryError):
                    raise
                except Exception as e:  # tifffile failed too: a missing codec, else a damaged file
                    raise e if "imagecodecs" in str(e) else unidentified from None
            with im:
                fmt = im.format or ""
                if from_raster is not None and fmt == "TIFF" and _tiff_samples(im) > len(im.getbands()):
                    return _read_raster(path, from_raster)  # Pillow kept only the first band of a multi-band raster
                nodata = _nodata(im)  # read before exif_transpose, whose copy has no TIFF tags
                if fmt == "PNG" and im.mode == "I":  # older Pillow reads 16-bit grey PNG as 32-bit "I"
                    im = im.convert("I;16")
                return from_pil(ImageOps.exif_transpose(im), path, nodata)
    except UserError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _too_large(path, _declared_size(path)) from None
    except MemoryError:
        w, h = _declared_size(path)
        raise UserError(f"{path}{f' ({w} x {h} pixels)' if w else ''} needs more memory to decode than is free; "
                        "downscale it or close other programs") from None
    except Exception as e:  # decoders raise anything on a bad file; each becomes one line
        raise _unreadable(path, e, fmt) from None


def _pil_rgb(im: Image.Image, path: Path, nodata: float | None) -> np.ndarray:
    if im.mode in _HIGH_DEPTH_MODES:
        return _grey_to_rgb(_to_uint8(np.asarray(im), path, nodata))
    # Composite transparency over white rather than letting convert() drop alpha onto black.
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        im = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # Pillow has no La -> RGBA
        back = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(back, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _raster_rgb(a: np.ndarray, alpha: bool, path: Path, nodata: float | None) -> np.ndarray:
    """A tifffile array (H, W) or (H, W, bands) -> RGB uint8; ``alpha``: its last band is transparency."""
    bands = 1 if a.ndim == 2 else a.shape[2]
    colour = bands - alpha
    if colour not in (1, 3):
        raise UserError(f"{path} has {bands} bands{' (one of them alpha)' if alpha else ''}; lamsc reads 1 (grey) "
                        "or 3 (RGB): write the three to show as RGB into their own file (e.g. `gdal_translate "
                        f"-b 3 -b 2 -b 1 {path.name} rgb.tif`) or one band as grey")
    a = a.reshape(a.shape[0], a.shape[1], bands)
    rgb = _to_uint8(a[..., :colour], path, nodata)
    if colour == 1:
        rgb = _grey_to_rgb(rgb[..., 0])
    if alpha:
        opacity = _alpha_fraction(a[..., colour])
        rgb = (rgb * opacity[..., None] + 255.0 * (1.0 - opacity[..., None])).round().astype(np.uint8)
    return rgb


def _to_uint8(a: np.ndarray, path: Path, nodata: float | None = None) -> np.ndarray:
    """Values of any dtype -> uint8 by the module's stated rule; notes and warnings say what was done."""
    if a.dtype == np.uint8:
        return a.copy()
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        log.info(f"{path}: 16-bit image, scaled to 8 bits by value / 257")
        return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    if a.dtype.kind not in "uif":
        raise UserError(f"{path} holds {a.dtype} pixels, which lamsc cannot show; {_FIX_CONVERT}")
    v = a.astype(np.float64)
    valid = np.isfinite(v)
    if nodata is not None and math.isfinite(nodata):
        valid &= v != nodata
    missing = int(v.size - np.count_nonzero(valid))
    if missing == v.size:
        raise UserError(f"{path} holds no valid value (every pixel is NaN, inf or the declared no-data value); "
                        "nothing to show: check the raster or pass another band")
    lo, hi = float(v[valid].min()), float(v[valid].max())
    kind = "float" if a.dtype.kind == "f" else "integer"
    if a.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        out = v * 255.0
        log.info(f"{path}: {kind} image in [0, 1], scaled to 8 bits by value x 255")
    elif hi > lo:
        out = (v - lo) * (255.0 / (hi - lo))
        log.info(f"{path}: {kind} image, its range {lo:.6g} .. {hi:.6g} stretched to 0 .. 255")
    else:
        out = np.zeros_like(v)
        log.info(f"{path}: {kind} image of one value ({lo:.6g}), shown black")
    if missing:
        what = "NaN/inf" + (f" or no-data ({nodata:g})" if nodata is not None and math.isfinite(nodata) else "")
        log.warning(f"{path}: {missing} of {v.size} pixels ({100.0 * missing / v.size:.1f}%) are {what}: "
                    "no data, shown black (0)")
    out = np.where(valid, out, 0.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _alpha_fraction(alpha: np.ndarray) -> np.ndarray:
    """An alpha band as opacity in [0, 1]: integers over their type's maximum, floats as they are."""
    if alpha.dtype.kind in "ui":
        return alpha.astype(np.float64) / np.iinfo(alpha.dtype).max
    return np.clip(np.nan_to_num(alpha.astype(np.float64), nan=1.0), 0.0, 1.0)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert("L")."""
    return (rgb.astype(np.float64) @ np.array(LUMA)).round().astype(np.uint8)


def _nodata(im: Image.Image) -> float | None:
    """The no-data value a GeoTIFF declares (GDAL_NODATA tag), or None."""
    tags = getattr(im, "tag_v2", None)
    return _parse_nodata(tags.get(_GDAL_NODATA) if tags is not None else None)


def _parse_nodata(text) -> float | None:
    try:
        return float(str(text).strip().strip("\x00")) if text is not None else None
    except ValueError:
        return None


def _tiff_samples(im: Image.Image) -> int:
    return int(getattr(im, "tag_v2", {}).get(277, 1))  # SamplesPerPixel


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _read_raster(path: Path, from_raster: Callable[..., np.ndarray]) -> np.ndarray:
    """The first image of a TIFF through tifffile, with its bands last: -> from_raster(array, alpha, ...)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        axes, shape = page.axes, page.shape
        h, w = shape[axes.index("Y")], shape[axes.index("X")]
        _check_pixels(path, (w, h))
        a = page.asarray()
        a = np.moveaxis(a, axes.index("S"), -1) if "S" in axes and a.ndim == 3 else a
        alpha = bool(page.extrasamples) and int(page.extrasamples[-1]) in (1, 2)  # associated / unassociated
        nodata_tag = page.tags.get(_GDAL_NODATA)
        nodata = _parse_nodata(nodata_tag.value if nodata_tag is not None else None)
    return from_raster(a, alpha, path, nodata)


@contextlib.contextmanager
def _quiet(logger: str):
    """Hold back a library's log warnings (tifffile's on damaged files): the UserError says what went wrong."""
    library = logging.getLogger(logger)
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library.setLevel(level)


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise _too_large(path, size)


def _declared_size(path: Path) -> tuple[int, int]:
    """Width and height from the file's header, read with Pillow's bomb guard off: nothing is decoded."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # only for the message
        return (0, 0)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _too_large(path: Path, size: tuple[int, int]) -> UserError:
    limit = Image.MAX_IMAGE_PIXELS or 0
    w, h = size
    pixels = w * h
    if not pixels:
        return UserError(f"{path} is larger than lamsc's limit of {limit:,} pixels (Pillow's decompression-bomb "
                         "guard); downscale it or cut it into tiles")
    percent = max(1, math.floor(100.0 * math.sqrt(limit / pixels)))
    return UserError(f"{path} is {w} x {h} pixels ({pixels:,}), over lamsc's limit of {limit:,} (Pillow's "
                     f"decompression-bomb guard); downscale it to {percent}% (e.g. `magick {path.name} -resize "
                     f"{percent}% smaller.png`) or cut it into tiles")


# Formats Pillow does not read, known by their first bytes: (signature test, name).
_FOREIGN = (
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"),
     "HEIC/HEIF"),
    (lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"), "AVIF"),
    (lambda b: b.startswith((b"\xff\x0a", b"\0\0\0\x0cJXL ")), "JPEG XL"),
    (lambda b: b.startswith(b"%PDF"), "PDF"),
    (lambda b: b.lstrip().startswith((b"<svg", b"<?xml")), "SVG/XML"),
)
# Formats Pillow does read, by their first bytes: a file that starts like one but is not identified is damaged.
_KNOWN = (
    (lambda b: b.startswith(b"\x89PNG"), "PNG"),
    (lambda b: b.startswith(b"\xff\xd8"), "JPEG"),
    (lambda b: b.startswith(b"GIF8"), "GIF"),
    (lambda b: b.startswith(b"RIFF") and b[8:12] == b"WEBP", "WebP"),
    (lambda b: b.startswith((b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")), "TIFF"),
    (lambda b: b.startswith(b"BM"), "BMP"),
)


def _unreadable(path: Path, e: Exception, fmt: str) -> UserError:
    """The one-line error for a file that failed to open or decode, its fix chosen by the cause."""
    cause = (str(e).splitlines() or [""])[0].strip() or type(e).__name__
    low = cause.lower()
    if isinstance(e, PermissionError):
        return UserError(f"{path} cannot be read ({e.strerror or cause}); check its permissions")
    with path.open("rb") as f:
        head = f.read(32)
    known = next((name for test, name in _KNOWN if test(head)), "")
    if isinstance(e, UnidentifiedImageError):
        foreign = next((name for test, name in _FOREIGN if test(head)), None)
        if not head:
            return UserError(f"{path} is empty (0 bytes); copy or download it again")
        if foreign:
            return UserError(f"{path} is a {foreign} file, which lamsc's image reader (Pillow) does not decode; "
                             f"{_FIX_CONVERT}")
        if known:
            return UserError(f"{path} starts as a {known} file but its header is damaged or cut short; export or "
                             "download it again")
        return UserError(f"{path} is not an image lamsc reads (PNG, JPEG, WebP, BMP, TIFF, GIF and the other "
                         f"formats Pillow knows); pass an image file, or {_FIX_CONVERT}")
    what = f"{fmt or known} " if fmt or known else ""
    if "truncated" in low or "premature end" in low or isinstance(e, EOFError):
        return UserError(f"{path} is cut short ({cause}): its {what}data ends early; copy or download it again")
    if "imagecodecs" in low:
        return UserError(f"{path} is compressed with a codec that needs the imagecodecs package ({cause}); "
                         f"`pip install imagecodecs`, or {_FIX_CONVERT}")
    if any(s in low for s in ("not available", "not supported", "unsupported", "unknown", "ghostscript",
                              "cannot handle", "not implemented")):
        return UserError(f"{path} is a {what}variant Pillow cannot decode ({cause}); {_FIX_CONVERT}")
    if isinstance(e, (SyntaxError, zlib.error)) or any(s in low for s in ("broken", "corrupt", "data stream",
                                                                          "decoder", "crc", "checksum")):
        return UserError(f"{path} is damaged ({cause}): its {what}data does not decode; export or download it again")
    return UserError(f"{path} could not be decoded as an image ({type(e).__name__}: {cause}); it may be damaged: "
                     f"{_FIX_CONVERT}")


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}; check the path")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_images(sources: Iterable[str | Path], bundled_names: bool = False) -> Iterator[NamedImage]:
    """Yield every image named by ``sources``: image files, image folders, class folders or VOC layouts. With
    ``bundled_names``, also a bundled photograph's name (``chelsea``) where nothing of that name exists: for
    images to look at, never for training data, where a mistyped folder must not become a photograph."""
    for source in sources:
        source = Path(source)
        if bundled_names and not source.exists():
            if str(source) in BUNDLED_PHOTOS:
                yield from bundled_photos([str(source)])
                continue
            raise UserError(f"image not found: {source}; check the path, or name a bundled photograph: "
                            f"{', '.join(BUNDLED_PHOTOS)}")
        if source.is_dir() and (source / "JPEGImages").is_dir():
            yield from load_voc(source)
        elif source.is_dir() and not image_files(source) and class_names(source):
            yield from load_class_folders(source)
        elif source.is_dir():
            files = image_files(source)
            if not files:
                raise UserError(f"no images in {source}; it should hold image files "
                                f"({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)})")
            for f in files:
                yield NamedImage(f.stem, load_image(f))
        else:
            yield NamedImage(source.stem, load_image(source))


def class_names(root: str | Path) -> list[str]:
    """Subfolders of ``root`` that hold images: an image-classification layout, one folder per class."""
    return sorted(d.name for d in Path(root).iterdir() if d.is_dir() and image_files(d))


def load_class_folders(root: str | Path) -> Iterator[NamedImage]:
    """Images of ``root/<class>/*``, each with the index of its class in sorted class order."""
    for index, name in enumerate(class_names(root)):
        for f in image_files(Path(root) / name):
            yield NamedImage(f"{name}/{f.stem}", load_image(f), category=index)


def load_voc(root: str | Path, split: str | None = None) -> Iterator[NamedImage]:
    """Yield the images of a VOC-layout folder, with their class labels where SegmentationClass has one.

    ``split`` names a list in ImageSets/Segmentation (e.g. "val"); without it every JPEG is used.
    Labels are the palette indices of SegmentationClass/*.png: 0 background, 1-20 classes, 255 void.
    """
    root = Path(root)
    jpegs = root / "JPEGImages"
    if not jpegs.is_dir():
        raise UserError(f"{root} is not a VOC-layout folder: JPEGImages/ is missing")
    if split is not None:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise UserError(f"split list not found: {listing}; name a split that exists, or none")
        names = [n.strip() for n in listing.read_text().split() if n.strip()]
    else:
        names = [p.stem for p in sorted(jpegs.glob("*.jpg"))]
    for name in names:
        pixels = load_image(jpegs / f"{name}.jpg")
        label_file = root / "SegmentationClass" / f"{name}.png"
        label = None
        if label_file.is_file():
            # Palette PNGs carry class indices directly; convert("L") would mix the palette colours.
            label = read_image(label_file, lambda lab, *_: np.asarray(lab if lab.mode == "P" else lab.convert("L"),
                                                                     dtype=np.uint8).copy())
            if label.shape != pixels.shape[:2]:
                raise UserError(f"{label_file} is {label.shape} but its image is {pixels.shape[:2]}; "
                                "the label must match the image size")
        yield NamedImage(name, pixels, label)


def bundled_photos(names: Iterable[str] = BUNDLED_PHOTOS) -> list[NamedImage]:
    """The photographs scikit-image ships, as RGB uint8 (greyscale ones replicated to three channels)."""
    from skimage import data

    out = []
    for name in names:
        if name not in BUNDLED_PHOTOS:
            raise UserError(f"unknown bundled photograph {name!r}; choose from {', '.join(BUNDLED_PHOTOS)}")
        pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        out.append(NamedImage(name, np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)))
    return out
