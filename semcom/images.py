"""Images in, as RGB uint8 arrays: files, folders, VOC-layout datasets and the bundled photographs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lamsc.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

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
    """Read an image file (any mode PIL reads) as RGB uint8 (H, W, 3), upright per its EXIF tag."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path} is not a readable image ({e}); pass a PNG, JPEG or WebP file") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    # Composite transparency over white rather than letting convert() drop alpha onto black.
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        back = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}; check the path")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def iter_images(sources: Iterable[str | Path]) -> Iterator[NamedImage]:
    """Yield every image named by ``sources``: image files, image folders, class folders or VOC layouts."""
    for source in sources:
        source = Path(source)
        if source.is_dir() and (source / "JPEGImages").is_dir():
            yield from load_voc(source)
        elif source.is_dir() and not image_files(source) and class_names(source):
            yield from load_class_folders(source)
        elif source.is_dir():
            files = image_files(source)
            if not files:
                raise UserError(f"no images in {source}; it should hold PNG, JPEG or WebP files")
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
            with Image.open(label_file) as lab:
                # Palette PNGs carry class indices directly; convert("L") would mix the palette colours.
                label = np.asarray(lab if lab.mode == "P" else lab.convert("L"), dtype=np.uint8).copy()
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
