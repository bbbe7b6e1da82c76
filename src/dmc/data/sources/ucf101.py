"""UCF-101 as still frames (the 100-class subset used by PROOF / ENGINE): `train/<class>/*.jpg`,
`test/<class>/*.jpg` under data.root. B0-Inc10.

Native ids follow the sorted class folder names. Folder names come either in the original CamelCase
("ApplyEyeMakeup") or with underscores ("Apply_Eye_Makeup"); both read as "Apply Eye Makeup". The number
of classes is whatever the folders hold (100 for the benchmark), so the full 101 classes work too.
"""
from __future__ import annotations

import re

from dmc.data.sources.base import SOURCES
from dmc.data.sources.imagefolder import ImageFolderSource

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
    default_base = 0
    default_increment = 10
    needs_root = True
    what = "the UCF-101 frame folder with train/<class>/*.jpg and test/<class>/*.jpg"
    how_to_get = (
        "extract frames of the UCF-101 videos (https://www.crcv.ucf.edu/data/UCF101.php) into that layout, "
        "one folder per action class"
    )

    def display_name(self, folder: str) -> str:
        return ucf_display_name(folder)


SOURCES.register("ucf101")(Ucf101Source())
