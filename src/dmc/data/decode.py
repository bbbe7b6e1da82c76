"""Decoding image files into the 8-bit RGB every backbone takes, whatever the file's mode.

PIL's `convert("RGB")` is right for 8-bit modes but not for all: 16-bit and 32-bit grey (`I;16`, `I`)
are clipped at 255 (a 16-bit scan turns almost white), and an alpha channel is dropped, showing whatever
colour the transparent pixels happened to hold. Here 16-bit values are scaled to 8 bits (65535 -> 255),
transparent pixels are laid over white (as a viewer shows them), palette images keep their transparency,
and CMYK goes through PIL's conversion. An image larger than `MAX_PIXELS` is refused in one line rather
than decoded (PIL's decompression-bomb guard, whose warnings would otherwise print as they are).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from dmc.errors import DataError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's default: about 9459 x 9459
BACKGROUND = (255, 255, 255)  # what transparent pixels are laid over


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """`Image.open(path)`, with an image above `MAX_PIXELS` refused in one line (a DataError naming the
    file) instead of PIL's warning or error; other errors pass through to the caller as PIL raises them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise DataError(f"image {path} has more than {Image.MAX_IMAGE_PIXELS or MAX_PIXELS:,} pixels, dmc's "
                            "limit for one image (PIL's decompression-bomb guard); "
                            "resize it (or leave it out)") from None
    with im:
        yield im


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB version of `im`, whatever its mode (see the module's docstring)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _wide_grey(im)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", im.size, BACKGROUND)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")


def _wide_grey(im: Image.Image) -> Image.Image:
    """A grey image of more than 8 bits (`I;16*`, `I`, `F`) as 8-bit RGB: 16-bit values scaled to 8 bits
    (v / 257, rounded: 65535 -> 255), as are `I` and `F` images holding values above 255; float images
    within [0, 1] are taken as fractions."""
    a = np.asarray(im, dtype=np.float64)  # (H, W)
    top = float(np.nanmax(a)) if a.size else 0.0
    if im.mode.startswith("I;16") or top > 255.0:
        a = a / 257.0
    elif im.mode == "F" and top <= 1.0:
        a = a * 255.0
    grey = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)  # (H, W)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")


def read_rgb(path: str | Path) -> Image.Image:
    """The image file at `path`, decoded, as 8-bit RGB (errors as `open_image` and PIL raise them)."""
    with open_image(path) as im:
        im.load()
        return to_rgb(im)
