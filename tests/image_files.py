"""Tiny image files for the source tests: valid PNG / JPEG bytes and bytes that are no image."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 60)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")
GARBAGE = b"this is not an image at all"


def write_file(path: Path, data: bytes = JPEG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
