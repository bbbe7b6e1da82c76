"""UCF-101 as still frames (the 100-class subset used by PROOF / ENGINE): `train/<class>/*.jpg`,
`test/<class>/*.jpg` under data.root. B0-Inc10.

Native ids follow the sorted class folder names. Folder names come either in the original CamelCase
("ApplyEyeMakeup") or with underscores ("Apply_Eye_Makeup"); both read as "Apply Eye Makeup".

The protocol is 100 classes: PROOF's released code reads the frame folders of its data release with
`class_order = np.arange(100)` (utils/data.py, class `UCF101`), and every published UCF-101 row we compare
with uses that subset. A root with another number of class folders (the full 101, say) stops in one line:
its numbers would not be comparable; `--benchmark imagefolder` runs any set of classes.
"""
from __future__ import annotations

import re

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES
from dmc.data.sources.imagefolder import ImageFolderSource
from dmc.errors import DataError

PROTOCOL_CLASSES = 100

_LOWER_THEN_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # "EyeMakeup" -> "Eye Makeup"
_ACRONYM_THEN_WORD = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")  # "TVShow" -> "TV Show"


def ucf_display_name(folder: str) -> str:
    """"ApplyEyeMakeup" / "Apply_Eye_Makeup" -> "Apply Eye Makeup"; "YoYo" -> "Yo Yo"."""
    text = folder.replace("_", " ")
    text = _LOWER_THEN_UPPER.sub(" ", text)
    text = _ACRONYM_THEN_WORD.sub(" ", text)
    return " ".join(text.split())


class Ucf101Source(ImageFolderSource):
    name = "ucf101"
    template = "a photo of a person {}."
    what = "the UCF-101 frame folder with train/<class>/*.jpg and test/<class>/*.jpg"
    how_to_get = (
        "extract frames of the UCF-101 videos (https://www.crcv.ucf.edu/data/UCF101.php) into that layout, "
        "one folder per action class"
    )

    def display_name(self, folder: str) -> str:
        return ucf_display_name(folder)

    def class_folders(self, data: DataConfig) -> list[str]:
        folders = super().class_folders(data)
        if len(folders) != PROTOCOL_CLASSES:
            raise DataError(f"UCF-101 benchmark: the protocol (PROOF / ENGINE) uses {PROTOCOL_CLASSES} classes, "
                            f"{self.root(data)} has {len(folders)} class folders; use the 100-class frame release, "
                            "or --benchmark imagefolder for another set (not comparable with published numbers)")
        return folders


SOURCES.register("ucf101")(Ucf101Source())
