"""Real benchmark sources on tiny fake trees in each official layout (no download, no real data):
the registry, the shared file helpers, imagefolder and ucf101."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import dmc.data.sources  # noqa: F401  (registers every source)
from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES
from dmc.data.sources.files import check_root, list_images, scan_images
from dmc.data.sources.ucf101 import ucf_display_name
from dmc.errors import DataError
from tests.image_files import GARBAGE, JPEG, PNG, write_file


# ---------------------------------------------------------------- registry and shared helpers


@pytest.mark.parametrize(
    "name,template,base,inc",
    [
        ("cifar100", "a photo of a {}.", 0, 10),
        ("imagefolder", "a photo of a {}.", 0, 10),
        ("imagenet-r", "a photo of a {}.", 0, 20),
        ("cub200", "a photo of a {}, a type of bird.", 0, 20),
        ("ucf101", "a photo of a person {}.", 0, 10),
    ],
)
def test_registered_with_protocol_defaults(name, template, base, inc):
    src = SOURCES.get(name)
    assert (src.name, src.template, src.default_base, src.default_increment) == (name, template, base, inc)
    assert src.needs_root is True and template.count("{}") == 1


def test_list_images_sorted_filtered_recursive(tmp_path):
    for rel in ["b.PNG", "a.jpg", "sub/c.webp", "sub/.hidden.jpg", "notes.txt", ".x/d.jpg", "e.jpeg", "f.bmp"]:
        write_file(tmp_path / rel)
    found = [Path(p).relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "e.jpeg", "f.bmp", "sub/c.webp"]


def test_check_root_messages(tmp_path):
    with pytest.raises(DataError, match=r"data.root is not set.*THE FOLDER.*GET IT HERE"):
        check_root(None, "THE FOLDER", "GET IT HERE")
    with pytest.raises(DataError, match=r"is not a folder; expected THE FOLDER; GET IT HERE"):
        check_root(str(tmp_path / "nope"), "THE FOLDER", "GET IT HERE")
    assert check_root(str(tmp_path), "x", "y") == tmp_path


def test_scan_images_error_and_skip(tmp_path, caplog):
    paths = [str(write_file(tmp_path / f"{i}.png", GARBAGE if i in (1, 3) else PNG)) for i in range(5)]
    with pytest.raises(DataError) as err:
        scan_images(paths, skip_corrupt=False)
    msg = str(err.value)
    assert msg.startswith(f"2 unreadable images, first: {paths[1]}") and "data.skip_corrupt=true" in msg
    with caplog.at_level(logging.WARNING):
        assert scan_images(paths, skip_corrupt=True) == [0, 2, 4]
    assert "2 unreadable images" in caplog.text and paths[1] in caplog.text
    assert scan_images(paths[:1], skip_corrupt=False) == [0]


# ---------------------------------------------------------------- imagefolder and ucf101


def _folder_tree(root: Path, classes: dict[str, tuple[int, int]]) -> Path:
    for folder, (n_train, n_test) in classes.items():
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                write_file(root / split / folder / f"img{i}.{'png' if i % 2 else 'jpg'}", PNG if i % 2 else JPEG)
    return root


def test_imagefolder_names_counts_targets(tmp_path):
    _folder_tree(tmp_path, {"zebra": (3, 1), "golden_retriever": (2, 2), "tabby_cat": (1, 1)})
    write_file(tmp_path / "train" / "zebra" / "nested" / "deep.jpg")
    write_file(tmp_path / "train" / "zebra" / "readme.txt", b"not an image")
    src, data = SOURCES.get("imagefolder"), DataConfig(root=str(tmp_path))
    assert src.class_names(data) == ["golden retriever", "tabby cat", "zebra"]
    train, test = src.load(data, "train"), src.load(data, "test")
    assert len(train) == 7 and len(test) == 4
    assert train.targets.dtype == np.int64 and train.targets.tolist() == [0, 0, 1, 2, 2, 2, 2]
    assert train.items[-1].endswith(os.path.join("zebra", "nested", "deep.jpg"))
    assert all(isinstance(p, str) and os.path.isfile(p) for p in train.items)


def test_imagefolder_train_test_mismatch(tmp_path):
    _folder_tree(tmp_path, {"a": (1, 1), "b": (1, 0)})
    write_file(tmp_path / "test" / "c" / "x.jpg")
    with pytest.raises(DataError, match=r"1 only in train/ \(first: b\), 1 only in test/ \(first: c\)"):
        SOURCES.get("imagefolder").class_names(DataConfig(root=str(tmp_path)))


def test_imagefolder_bad_layouts(tmp_path):
    src = SOURCES.get("imagefolder")
    with pytest.raises(DataError, match="data.root is not set.*train/<class name>/"):
        src.class_names(DataConfig())
    _folder_tree(tmp_path, {"a": (1, 1)})
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "test" / "b").mkdir()
    with pytest.raises(DataError, match=r"1 class folders .* hold no images, first: train/b"):
        src.load(DataConfig(root=str(tmp_path)), "train")
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DataError, match="has no test/ folder"):
        src.load(DataConfig(root=str(tmp_path)), "train")


def test_imagefolder_corrupt_image(tmp_path):
    _folder_tree(tmp_path, {"a": (2, 1), "b": (2, 1)})
    bad = write_file(tmp_path / "train" / "b" / "broken.jpg", GARBAGE)
    src = SOURCES.get("imagefolder")
    with pytest.raises(DataError, match=f"1 unreadable images, first: {bad}"):
        src.load(DataConfig(root=str(tmp_path)), "train")
    kept = src.load(DataConfig(root=str(tmp_path), skip_corrupt=True), "train")
    assert len(kept) == 4 and str(bad) not in kept.items and kept.targets.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "folder,name",
    [
        ("ApplyEyeMakeup", "Apply Eye Makeup"),
        ("Apply_Eye_Makeup", "Apply Eye Makeup"),
        ("YoYo", "Yo Yo"),
        ("HandstandPushups", "Handstand Pushups"),
        ("Skijet", "Skijet"),
        ("PlayingDaf", "Playing Daf"),
        ("TVShow", "TV Show"),
    ],
)
def test_ucf_name_cleaning(folder, name):
    assert ucf_display_name(folder) == name


def ucf_tree(root: Path, n_classes: int = 100) -> Path:
    """A UCF-101 frame tree: three named classes, the rest `Class000`... (one frame per split each)."""
    classes = {"ApplyEyeMakeup": (3, 2), "Apply_Lipstick": (2, 1), "YoYo": (1, 1)}
    classes.update({f"Class{i:03d}": (1, 1) for i in range(n_classes - 3)})
    return _folder_tree(root, classes)


def test_ucf101_loads_frame_folders(tmp_path):
    ucf_tree(tmp_path)
    src, data = SOURCES.get("ucf101"), DataConfig(root=str(tmp_path))
    names = src.class_names(data)
    assert len(names) == 100 and names[:3] == ["Apply Eye Makeup", "Apply Lipstick", "Class000"]
    assert names[-1] == "Yo Yo"
    assert len(src.load(data, "train")) == 103 and src.load(data, "test").targets.tolist()[:4] == [0, 0, 1, 2]
    assert src.template.format("Apply Eye Makeup") == "a photo of a person Apply Eye Makeup."


def test_ucf101_is_the_100_class_protocol(tmp_path):
    ucf_tree(tmp_path, n_classes=101)
    with pytest.raises(DataError, match="uses 100 classes, .* has 101 class folders.*--benchmark imagefolder"):
        SOURCES.get("ucf101").class_names(DataConfig(root=str(tmp_path)))
