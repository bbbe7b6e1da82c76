"""The offline glyph world: 100 character classes rendered in two domains, with no download.

The clean domain (font set A, flat colours, upright, centred) pretrains the toy CLIP; the renditions domain
(font set B, geometric jitter, textured backgrounds, noise and blur) is the CIL benchmark. The two font sets
are disjoint, so the benchmark is a genuine domain shift rather than new draws of the pretraining data.
Every image is a pure function of (seed, domain, class, index), so a class renders the same whatever other
classes are requested alongside it.
"""
from __future__ import annotations

import hashlib
import logging
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dmc.files import cache_dir  # noqa: F401  (glyphs.cache_dir: where the world's renders and the toy CLIP live)


log = logging.getLogger(__name__)

# Chosen greedily (Latin, digits, Greek, Cyrillic) so that no two glyphs look alike in any font
# (max-over-fonts pixel correlation < 0.96); case pairs that differ only in size are left out.
CLASS_CHARS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghkmnopqrtuy023456789"
    "ΓΔΞΣΦΨΩαβδεζηικλμνξςστυφω"
    "ЁБДЖЙЛЦЧШЩЪЫЭЮЯдйнфъыьё"
)
SIZE = 32  # image side in pixels
RENDER_VERSION = 1  # bump when the rendering recipe changes: it invalidates cached arrays
FONT_SET_A = tuple(  # clean domain (pretraining)
    f"DejaVuSans{m}{s}.ttf" for m in ("", "Mono") for s in ("", "-Bold", "-Oblique", "-BoldOblique")
)
FONT_SET_B = tuple(f"DejaVuSerif{s}.ttf" for s in ("", "-Bold", "-Italic", "-BoldItalic")) + tuple(
    f"STIXGeneral{s}.ttf" for s in ("", "Bol", "Italic", "BolIta")
)  # renditions domain
_DOMAIN_CODE = {"clean": 1, "renditions": 2, "pretraining": 3}
_SPLIT_CODE = {"train": 11, "test": 22}
_LUMA = np.array([0.299, 0.587, 0.114])


def class_names() -> list[str]:
    """The 100 class names in native id order, e.g. "greek small letter final sigma"."""
    return [unicodedata.name(ch).lower() for ch in CLASS_CHARS]


def split_seed(seed: int, split: str) -> int:
    """Derive the rendering seed of a split, so that train and test are disjoint random draws."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return int(np.random.SeedSequence([seed, _SPLIT_CODE[split]]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------- fonts
def _wheel_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _covers_classes(path: Path) -> bool:
    from matplotlib.ft2font import FT2Font

    try:
        charmap = FT2Font(str(path)).get_charmap()
    except Exception:  # unreadable or unsupported font file
        return False
    return all(ord(ch) in charmap for ch in CLASS_CHARS)


@lru_cache(maxsize=1)
def _system_fonts() -> tuple[Path, ...]:
    """System fonts that cover all 100 classes; LastResort draws placeholders, so it never counts."""
    from matplotlib import font_manager

    wheel = _wheel_font_dir().resolve()
    found = sorted({Path(p).resolve() for p in font_manager.findSystemFonts(fontext="ttf")})
    keep = [p for p in found if wheel not in p.parents and "lastresort" not in p.name.lower()]
    return tuple(p for p in keep if _covers_classes(p))


def font_paths(domain: str, system_fonts: bool = False) -> list[Path]:
    """Font files of a domain. System fonts (opt-in) join the renditions set only, keeping A and B disjoint."""
    names = {"clean": FONT_SET_A, "renditions": FONT_SET_B}[domain]
    paths = [_wheel_font_dir() / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib fonts missing: {', '.join(missing)}")
    if system_fonts and domain == "renditions":
        paths += [p for p in _system_fonts() if p.name not in FONT_SET_A]
    return paths


@lru_cache(maxsize=None)
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def font_manifest(system_fonts: bool = False) -> list[dict[str, str]]:
    """Name and sha256 of every font file per domain: recorded in run configs so images can be traced."""
    return [
        {"domain": d, "name": p.name, "sha256": _sha256(p)}
        for d in ("clean", "renditions")
        for p in font_paths(d, system_fonts)
    ]


# ------------------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=20000)
def _glyph_mask(path: Path, size: int, ch: str) -> Image.Image:
    """The glyph's ink, cropped to its bounding box, as an 8-bit coverage mask."""
    font = ImageFont.truetype(str(path), size)
    left, top, right, bottom = font.getbbox(ch)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), ch, font=font, fill=255)
    return canvas.crop(canvas.getbbox() or (0, 0, 1, 1))


def _place(mask: Image.Image, side: int, cx: float, cy: float) -> Image.Image:
    """Paste a mask on an empty side x side canvas with its box centred at (cx, cy), clipping the rest."""
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(mask, (int(round(cx - mask.width / 2)), int(round(cy - mask.height / 2))))
    return canvas


def _contrasting(rng: np.random.Generator, bg_luma: float, min_contrast: float) -> np.ndarray:
    """A random RGB colour whose luminance differs from bg_luma by at least min_contrast."""
    for _ in range(32):
        c = rng.random(3)
        if abs(float(c @ _LUMA) - bg_luma) >= min_contrast:
            return c
    return np.zeros(3) if bg_luma > 0.5 else np.ones(3)


def _clean_colours(rng: np.random.Generator, colour: float) -> tuple[np.ndarray, np.ndarray]:
    """(glyph, background) RGB: grey ink on light paper, or with probability `colour` any contrasting pair."""
    if rng.random() >= colour:
        return np.full(3, rng.uniform(0.0, 0.25)), np.full(3, rng.uniform(0.8, 1.0))
    bg = rng.random(3)
    return _contrasting(rng, float(bg @ _LUMA), 0.4), bg


def _warp(mask: Image.Image, rng: np.random.Generator, amplitude: float) -> Image.Image:
    """A smooth random deformation: each pixel is read from a place displaced by a bicubic 4x4 field."""
    h, w = mask.height, mask.width
    field = [np.asarray(Image.fromarray(rng.uniform(-1, 1, (4, 4)).astype(np.float32), "F").resize(
        (w, h), Image.BICUBIC)) * amplitude for _ in range(2)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = np.clip(yy + field[0], 0, h - 1), np.clip(xx + field[1], 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx, a = ys - y0, xs - x0, np.asarray(mask, np.float32)
    top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
    bottom = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
    return Image.fromarray(np.clip(top * (1 - fy) + bottom * fy + 0.5, 0, 255).astype(np.uint8))


def _restyle(rng: np.random.Generator, mask: Image.Image) -> Image.Image:
    """Synthetic type styles for pretraining, on a mask drawn at 2x: stroke weight (thinner by 0.5 px or bolder
    by up to 1 px at 1x), slant, width and a smooth warp. They vary the letter forms the way other typefaces do,
    without drawing any typeface of the benchmark."""
    pad = mask.height // 3
    canvas = Image.new("L", (mask.width + 2 * pad, mask.height + 2 * pad), 0)
    canvas.paste(mask, (pad, pad))
    weight = int(rng.integers(-1, 3))
    if weight > 0:
        canvas = canvas.filter(ImageFilter.MaxFilter(2 * weight + 1))
    elif weight < 0:
        thin = canvas.filter(ImageFilter.MinFilter(3))
        if np.asarray(thin, np.float32).sum() > 0.4 * np.asarray(canvas, np.float32).sum():  # keep thin strokes
            canvas = thin
    shear, stretch = rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.25)
    w, h = canvas.size
    canvas = canvas.transform((w, h), Image.AFFINE, (1 / stretch, shear, -shear * h / 2 + (w - w / stretch) / 2,
                                                     0, 1, 0), resample=Image.BICUBIC)
    canvas = _warp(canvas, rng, rng.uniform(0.0, 0.06 * h))
    return canvas.crop(canvas.getbbox() or (0, 0, 1, 1))


def _styled_mask(rng: np.random.Generator, font: Path, size: int, ch: str, style: float) -> Image.Image:
    """The glyph's mask at `size`, restyled (drawn at 2x, then box-downsampled) with probability `style`."""
    if style <= 0 or rng.random() >= style:
        return _glyph_mask(font, size, ch)
    big = _restyle(rng, _glyph_mask(font, 2 * size, ch))
    return big.resize((max(1, big.width // 2), max(1, big.height // 2)), Image.BOX)


def _one_clean(rng: np.random.Generator, ch: str, fonts: Sequence[Path], colour: float,
               style: float = 0.0) -> np.ndarray:
    font = fonts[rng.integers(len(fonts))]
    mask = _styled_mask(rng, font, int(rng.integers(20, 25)), ch, style)
    dx, dy = rng.uniform(-1.0, 1.0, size=2)
    m = np.asarray(_place(mask, SIZE, SIZE / 2 + dx, SIZE / 2 + dy), np.float32)[..., None] / 255.0
    fg, bg = _clean_colours(rng, colour)
    img = bg * (1.0 - m) + fg * m  # (32, 32, 3)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, s: float) -> np.ndarray:
    """Flat colour, two-colour gradient, sinusoidal stripes or bicubic blotches; texture grows with s."""
    c0 = rng.random(3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1.0)
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(c0, (SIZE, SIZE, 3)).copy()
    if kind == 1:
        theta = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(theta) + yy * np.sin(theta))[..., None]
        t = (t - t.min()) / (np.ptp(t) + 1e-8)
        c1 = c0 + min(1.0, 0.3 + s) * (rng.random(3) - c0)
        return c0 + t * (c1 - c0)
    if kind == 2:
        theta, phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 4.0)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)[..., None]
        return np.clip(c0 + 0.6 * s * wave * rng.uniform(-1, 1, 3), 0, 1)
    small = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    blot = np.asarray(small.resize((SIZE, SIZE), Image.BICUBIC), np.float64) / 255.0
    return np.clip(c0 + 0.6 * s * (blot - 0.5) * 2, 0, 1)


def _rendition_mask(rng: np.random.Generator, ch: str, fonts: Sequence[Path], s: float,
                    style: float = 0.0) -> np.ndarray:
    """Geometric part of a rendition: drawn at 2x with scale, rotation and offset, box-downsampled.
    `style` > 0 (pretraining only) restyles the letter form with that probability first."""
    font = fonts[rng.integers(len(fonts))]
    size = rng.integers(20, 25) * rng.uniform(1 - 0.3 * s, 1 + 0.15 * s)
    mask = _glyph_mask(font, int(round(2 * size)), ch)
    if style > 0 and rng.random() < style:
        mask = _restyle(rng, mask)
    mask = mask.rotate(
        rng.uniform(-30 * s, 30 * s), resample=Image.BICUBIC, expand=True
    )
    dx, dy = rng.uniform(-6 * s, 6 * s, size=2)
    big = _place(mask, 2 * SIZE, SIZE + 2 * dx, SIZE + 2 * dy)
    return np.asarray(big.resize((SIZE, SIZE), Image.BOX), np.float64)[..., None] / 255.0  # (32, 32, 1)


def grating(rng: np.random.Generator, img: np.ndarray, period: float, amplitude: float,
            fraction: float = 1.0) -> np.ndarray:
    """A sinusoidal grating of `period` pixels at a random orientation and phase added to a float image
    (H, W, 3) in [0, 1], with probability `fraction` (the draws happen either way: fraction, orientation,
    phase, so the stream of what follows does not depend on whether the grating was laid)."""
    laid = rng.random() < fraction
    theta = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi)
    if not laid:
        return img
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    return np.clip(img + amplitude * wave[..., None], 0.0, 1.0)


def _one_rendition(rng: np.random.Generator, ch: str, fonts: Sequence[Path], s: float,
                   style: float = 0.0, shift: Callable | None = None) -> np.ndarray:
    m = _rendition_mask(rng, ch, fonts, s, style)
    bg = _background(rng, s)  # (32, 32, 3)
    fg = _contrasting(rng, float(bg.mean(axis=(0, 1)) @ _LUMA), 0.45 - 0.2 * s)
    composite = bg * (1 - m) + fg * m
    if shift is not None:  # glyphs-shift: the shift is laid before blur and noise, as a photo's would be
        composite = shift(rng, composite)
    img = Image.fromarray(np.clip(composite * 255 + 0.5, 0, 255).astype(np.uint8))
    radius = rng.uniform(0, 1.0 * s)
    if radius > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    out = np.asarray(img, np.float64) + rng.normal(0, rng.uniform(0, 0.08 * s), (SIZE, SIZE, 3)) * 255
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _render(domain: str, class_ids: Sequence[int], n: int, seed: int, draw: Callable) -> tuple:
    """Render n images per class, each class from its own random stream (seed, domain, class)."""
    images = np.empty((len(class_ids) * n, SIZE, SIZE, 3), np.uint8)  # (N, 32, 32, 3)
    for i, cid in enumerate(class_ids):
        rng = np.random.default_rng([seed, _DOMAIN_CODE[domain], int(cid)])
        for j in range(n):
            images[i * n + j] = draw(rng, CLASS_CHARS[cid])
    targets = np.repeat(np.asarray(class_ids, np.int64), n)  # (N,)
    return images, targets


def render_clean(
    class_ids: Sequence[int], n_per_class: int, seed: int, colour: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """Clean-domain images (font set A, upright, flat colours): uint8 (N, 32, 32, 3) and int64 targets (N,).

    `colour` is the fraction drawn in random contrasting colours instead of grey on paper: pretraining on
    grey only leaves the toy CLIP blind to colour, so renditions zero-shot would sit near chance.
    """
    fonts = font_paths("clean")
    return _render("clean", class_ids, n_per_class, seed, lambda r, ch: _one_clean(r, ch, fonts, colour))


def render_pretraining(
    class_ids: Sequence[int], n_per_class: int, seed: int, colour: float = 0.75, nuisance: float = 0.0,
    nuisance_max: float = 0.3, style: float = 0.0, plain_fonts: str = "clean",
) -> tuple[np.ndarray, np.ndarray]:
    """The toy CLIP's pretraining images, never a benchmark image.

    A share `nuisance` is drawn in the renditions' style (geometric jitter, textured backgrounds, noise,
    blur, at a severity drawn from U(0, nuisance_max)) but only in font set A; the rest are clean-style
    glyphs (`render_clean`'s flat colours, upright, centred) in set A, or with `plain_fonts="all"` in sets A
    and B. So pretraining has seen the benchmark's typefaces only as clean glyphs and the renditions' style
    only on other typefaces: like real CLIP, which has seen photos of the objects and paintings of others,
    the benchmark is a new combination of things it knows. A share `style` of the letter forms is restyled
    (`_restyle`: stroke weight, slant, width, warp), standing in for the many typefaces of the web.
    """
    fonts = font_paths("clean")
    plain = fonts + (font_paths("renditions") if plain_fonts == "all" else [])

    def draw(rng: np.random.Generator, ch: str) -> np.ndarray:
        if rng.random() < nuisance:
            return _one_rendition(rng, ch, fonts, float(rng.uniform(0.0, nuisance_max)), style)
        return _one_clean(rng, ch, plain, colour, style)

    return _render("pretraining", class_ids, n_per_class, seed, draw)


def render_renditions(
    class_ids: Sequence[int], n_per_class: int, seed: int, severity: float, system_fonts: bool = False,
    shift: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Renditions (font set B, jitter, textures, noise, blur at `severity` in [0, 1]): like render_clean.
    `shift(rng, image)` changes each float composite before its blur and noise (`glyphs-shift`)."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    fonts = font_paths("renditions", system_fonts)
    draw = lambda r, ch: _one_rendition(r, ch, fonts, severity, shift=shift)  # noqa: E731
    return _render("renditions", class_ids, n_per_class, seed, draw)
