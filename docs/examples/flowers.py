"""An example benchmark from an image folder (docs/extending.md): `train/<class>/…` and `test/<class>/…`
under data.root, its own prompt template and split. tests/test_extending.py builds it on a fake tree."""
from __future__ import annotations

from dmc.data.sources.base import SOURCES
from dmc.data.sources.imagefolder import ImageFolderSource


class FlowersSource(ImageFolderSource):
    name = "flowers"
    template = "a photo of a {}, a type of flower."
    default_base = 0
    default_increment = 5  # B0-Inc5 unless benchmark.base / benchmark.increment say otherwise
    what = "a folder with train/<flower name>/ and test/<flower name>/ subfolders of images"
    how_to_get = "arrange your flower photos that way (folder names are the class names: 'sweet_pea')"


SOURCES.register("flowers")(FlowersSource())
