"""ImageNet-R on a fake tree: built-in classes, the seeded 80/20 split, split files, corrupt images."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import dmc.data.sources  # noqa: F401  (registers every source)
from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES
from dmc.data.sources.files import list_images
from dmc.data.sources.imagenet_r import imagenet_r_classes, imagenet_r_root, train_count, write_split
from dmc.errors import DataError
from tests.image_files import GARBAGE, write_file


# ---------------------------------------------------------------- imagenet-r

WNIDS = [wnid for wnid, _ in imagenet_r_classes()]
SIZES = {0: 10, 1: 7, 2: 3}  # other classes: 2 images


def _imagenet_r_tree(parent: Path) -> Path:
    root = parent / "imagenet-r"
    for label, wnid in enumerate(WNIDS):
        for i in range(SIZES.get(label, 2)):
            write_file(root / wnid / f"{['art', 'toy', 'sketch'][i % 3]}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def inr_root(tmp_path_factory) -> Path:
    """A shared ImageNet-R tree for the tests that only read it."""
    return _imagenet_r_tree(tmp_path_factory.mktemp("inr"))


def _rel(items, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in items]


def test_imagenet_r_classes_built_in():
    names = SOURCES.get("imagenet-r").class_names(DataConfig())
    assert len(names) == 200 == len(set(names)) == len(set(WNIDS))
    assert names[:3] == ["goldfish", "great white shark", "hammerhead shark"] and names[-1] == "acorn"
    assert WNIDS == sorted(WNIDS) and WNIDS[0] == "n01443537"


def test_imagenet_r_seeded_split_rule(inr_root):
    root = inr_root
    src, data = SOURCES.get("imagenet-r"), DataConfig(root=str(root), split_seed=3)
    train, test = src.load(data, "train"), src.load(data, "test")
    n_train, n_test = np.bincount(train.targets, minlength=200), np.bincount(test.targets, minlength=200)
    assert [n_train[c] for c in range(4)] == [8, 5, 2, 1] and [n_test[c] for c in range(4)] == [2, 2, 1, 1]
    assert len(train) + len(test) == 10 + 7 + 3 + 197 * 2
    assert not set(train.items) & set(test.items)
    class0 = sorted(Path(p).relative_to(root).as_posix() for p in list_images(root / WNIDS[0]))
    ranked = sorted(class0, key=lambda r: hashlib.sha256(f"3/{r}".encode()).hexdigest())
    assert [r for r, t in zip(_rel(train.items, root), train.targets) if t == 0] == sorted(ranked[:8])
    assert train_count(30) == 24 and train_count(9) == 7


def test_imagenet_r_split_deterministic_seeded_and_location_free(tmp_path):
    root = _imagenet_r_tree(tmp_path / "a")
    src = SOURCES.get("imagenet-r")
    first = src.load(DataConfig(root=str(root)), "test")
    again = src.load(DataConfig(root=str(tmp_path / "a")), "test")  # parent of imagenet-r/ works too
    assert first.items == again.items and np.array_equal(first.targets, again.targets)
    other_seed = src.load(DataConfig(root=str(root), split_seed=1), "test")
    assert _rel(other_seed.items, root) != _rel(first.items, root)
    moved = shutil.copytree(root, tmp_path / "b" / "renamed")
    assert _rel(src.load(DataConfig(root=str(moved)), "test").items, moved) == _rel(first.items, root)


def test_imagenet_r_missing_class_folders(tmp_path):
    root = _imagenet_r_tree(tmp_path)
    shutil.rmtree(root / WNIDS[5])
    shutil.rmtree(root / WNIDS[9])
    with pytest.raises(DataError, match=f"2 of 200 class folders missing .*first: {WNIDS[5]}.*imagenet-r.tar"):
        SOURCES.get("imagenet-r").load(DataConfig(root=str(root)), "train")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match=f"200 of 200 class folders missing .*first: {WNIDS[0]}"):
        SOURCES.get("imagenet-r").load(DataConfig(root=str(tmp_path / "elsewhere")), "train")


def test_imagenet_r_split_file_round_trip(tmp_path, inr_root):
    root = inr_root
    src, data = SOURCES.get("imagenet-r"), DataConfig(root=str(root))
    train, test = src.load(data, "train"), src.load(data, "test")
    split_path = tmp_path / "split.txt"
    write_split(train, test, imagenet_r_root(data), split_path)
    lines = split_path.read_text().splitlines()
    assert lines[0] == "train" and lines[len(train) + 1] == "test" and len(lines) == len(train) + len(test) + 2
    assert lines[1] == _rel(train.items, root)[0]
    from_file = DataConfig(root=str(root), split_file=str(split_path), split_seed=99)
    for split, expected in (("train", train), ("test", test)):
        got = src.load(from_file, split)
        assert got.items == expected.items and np.array_equal(got.targets, expected.targets)
    src.save_split(DataConfig(root=str(root.parent)), train, test, tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_text() == split_path.read_text()
    with pytest.raises(ValueError, match="not under"):
        write_split(train, test, root / WNIDS[0], tmp_path / "bad.txt")


def test_imagenet_r_custom_split_file(tmp_path, inr_root):
    root = inr_root
    split_path = tmp_path / "my_split.txt"
    split_path.write_text(
        f"# my split\ntrain\nimagenet-r/{WNIDS[0]}/art_0.jpg\n\n{WNIDS[2]}\\toy_1.jpg\ntest\n./{WNIDS[0]}/toy_1.jpg\n"
    )
    src, data = SOURCES.get("imagenet-r"), DataConfig(root=str(root.parent), split_file=str(split_path))
    train, test = src.load(data, "train"), src.load(data, "test")
    assert _rel(train.items, root) == [f"{WNIDS[0]}/art_0.jpg", f"{WNIDS[2]}/toy_1.jpg"]
    assert train.targets.tolist() == [0, 2] and test.targets.tolist() == [0]


@pytest.mark.parametrize(
    "text,error",
    [
        ("{w0}/art_0.jpg\ntrain\ntest\n", r":1: path before a 'train' or 'test' header"),
        ("train\n{w0}/art_0.jpg\n", r"no 'test' header"),
        ("train\nn99999999/a.jpg\ntest\n", r"1 train paths are not <wnid>/<file>.*first: n99999999/a.jpg"),
        ("train\n{w0}/missing.jpg\ntest\n", r"1 images listed in .* do not exist, first: .*missing.jpg"),
        ("train\n{w0}/art_0.jpg\ntest\n{w0}/art_0.jpg\n", r"1 paths in both train and test"),
        ("train\ntrain\ntest\n", r":2: second 'train' header"),
    ],
)
def test_imagenet_r_bad_split_files(tmp_path, inr_root, text, error):
    root = inr_root
    split_path = tmp_path / "split.txt"
    split_path.write_text(text.format(w0=WNIDS[0]))
    with pytest.raises(DataError, match=error):
        SOURCES.get("imagenet-r").load(DataConfig(root=str(root), split_file=str(split_path)), "train")


def test_imagenet_r_corrupt_image_skipped_after_split(tmp_path):
    root = _imagenet_r_tree(tmp_path)
    src = SOURCES.get("imagenet-r")
    clean = {s: src.load(DataConfig(root=str(root)), s) for s in ("train", "test")}
    bad = clean["train"].items[3]
    Path(bad).write_bytes(GARBAGE)
    with pytest.raises(DataError, match=f"1 unreadable images, first: {bad}"):
        src.load(DataConfig(root=str(root)), "train")
    skipped = {s: src.load(DataConfig(root=str(root), skip_corrupt=True), s) for s in ("train", "test")}
    assert skipped["train"].items == [p for p in clean["train"].items if p != bad]
    assert skipped["test"].items == clean["test"].items
