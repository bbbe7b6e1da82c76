"""Image files of every common mode are read as the 8-bit RGB image they show, for training (the
datasets' loader) and for `dmc predict` / `dmc.load(...).predict`: 16-bit scaled (not clipped), palette,
CMYK, grey, alpha laid over white. An image above the pixel limit is one line, not PIL's warnings."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dmc.data.dataset import ImageDataset
from dmc.data.sources.base import Samples
from dmc.errors import DataError

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)  # (H, W, 3) the image every file shows
GREY8 = RNG.integers(0, 256, size=(6, 5), dtype=np.uint8)  # (H, W)
ALPHA = np.tile(np.array([0, 64, 128, 200, 255], dtype=np.uint8), (6, 1))  # (H, W) per column


def _png16_rgb(path, rgb16: np.ndarray) -> None:
    """A 48-bit PNG (PIL writes none): 16-bit big-endian samples, filter 0 per row."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255.0
    return rgb.astype(np.float64) * a + 255.0 * (1 - a)


def _files(tmp_path):
    """(file, the 8-bit RGB it shows, tolerance) per mode."""
    grey3 = np.repeat(GREY8[..., None], 3, axis=2)
    out = {}
    Image.fromarray(RGB8, "RGB").save(tmp_path / "rgb.png")
    out["rgb"] = (tmp_path / "rgb.png", RGB8, 0)
    Image.fromarray(GREY8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # mode I;16
    out["grey16"] = (tmp_path / "grey16.png", grey3, 0)
    _png16_rgb(tmp_path / "rgb16.png", RGB8.astype(np.uint16) * 257)
    out["rgb16"] = (tmp_path / "rgb16.png", RGB8, 0)
    Image.fromarray(GREY8, "L").save(tmp_path / "grey.png")
    out["grey"] = (tmp_path / "grey.png", grey3, 0)
    colours = RGB8.reshape(-1, 3)  # 30 colours: a palette holds them exactly
    pal = Image.new("P", (5, 6))
    pal.putpalette(colours.flatten().tolist())
    pal.putdata(list(range(30)))
    pal.save(tmp_path / "palette.png")
    out["palette"] = (tmp_path / "palette.png", RGB8, 0)
    pal.save(tmp_path / "palette-transparent.png", transparency=0)  # index 0 (the first pixel) transparent
    clear = RGB8.copy()
    clear[0, 0] = 255
    out["palette-transparent"] = (tmp_path / "palette-transparent.png", clear, 0)
    Image.fromarray(RGB8, "RGB").convert("CMYK").save(tmp_path / "cmyk.tif")
    out["cmyk"] = (tmp_path / "cmyk.tif", RGB8, 0)
    Image.fromarray(np.dstack([RGB8, ALPHA]), "RGBA").save(tmp_path / "rgba.png")
    out["rgba"] = (tmp_path / "rgba.png", _over_white(RGB8, ALPHA), 1)
    Image.fromarray(np.dstack([GREY8, ALPHA]), "LA").save(tmp_path / "la.png")
    out["la"] = (tmp_path / "la.png", _over_white(grey3, ALPHA), 1)
    return out


MODES = ["rgb", "grey16", "rgb16", "grey", "palette", "palette-transparent", "cmyk", "rgba", "la"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_is_read_as_the_8_bit_rgb_image_it_shows(tmp_path, mode):
    from dmc.engine.predict import _dataset

    path, expected, tol = _files(tmp_path)[mode]
    as_array = np.asarray  # the transform: the decoded image as it is
    training = ImageDataset(Samples([str(path)], np.zeros(1, np.int64)), np.zeros(1), as_array)
    predicting = _dataset([str(path)], as_array)  # dmc predict and Predictor.predict
    with Image.open(path) as im:
        given = _dataset([im.copy()], as_array)  # a PIL image handed to Predictor.predict
    for ds in (training, predicting, given):
        got = ds[0][0]
        assert got.dtype == np.uint8 and got.shape == (6, 5, 3)
        assert np.abs(got.astype(np.float64) - expected).max() <= tol, mode


def test_an_image_above_the_pixel_limit_is_one_line(tmp_path, monkeypatch, recwarn):
    from dmc.data.sources.files import check_readable

    Image.fromarray(RGB8, "RGB").resize((40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: PIL would warn
    with pytest.raises(DataError, match="big.png has more than 1,000 pixels"):
        check_readable([tmp_path / "big.png"], decode=True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # more than twice the limit: PIL's error
    with pytest.raises(DataError, match="more than 500 pixels"):
        ImageDataset(Samples([str(tmp_path / "big.png")], np.zeros(1, np.int64)), np.zeros(1), np.asarray)[0]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
