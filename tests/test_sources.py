"""Real benchmark sources on tiny fake trees in each official layout (no download, no real data)."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dmc.data.sources  # noqa: F401  (registers every source)
from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES
from dmc.data.sources.cub200 import clean_cub_name, cub_folders
from dmc.data.sources.files import check_root, list_images, scan_images
from dmc.data.sources.imagenet_r import imagenet_r_classes, imagenet_r_root, train_count, write_split
from dmc.data.sources.ucf101 import ucf_display_name
from dmc.errors import DataError


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 60)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")
GARBAGE = b"this is not an image at all"


def _write(path: Path, data: bytes = JPEG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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
        _write(tmp_path / rel)
    found = [Path(p).relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "e.jpeg", "f.bmp", "sub/c.webp"]


def test_check_root_messages(tmp_path):
    with pytest.raises(DataError, match=r"data.root is not set.*THE FOLDER.*GET IT HERE"):
        check_root(None, "THE FOLDER", "GET IT HERE")
    with pytest.raises(DataError, match=r"is not a folder; expected THE FOLDER; GET IT HERE"):
        check_root(str(tmp_path / "nope"), "THE FOLDER", "GET IT HERE")
    assert check_root(str(tmp_path), "x", "y") == tmp_path


def test_scan_images_error_and_skip(tmp_path, caplog):
    paths = [str(_write(tmp_path / f"{i}.png", GARBAGE if i in (1, 3) else PNG)) for i in range(5)]
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
                _write(root / split / folder / f"img{i}.{'png' if i % 2 else 'jpg'}", PNG if i % 2 else JPEG)
    return root


def test_imagefolder_names_counts_targets(tmp_path):
    _folder_tree(tmp_path, {"zebra": (3, 1), "golden_retriever": (2, 2), "tabby_cat": (1, 1)})
    _write(tmp_path / "train" / "zebra" / "nested" / "deep.jpg")
    _write(tmp_path / "train" / "zebra" / "readme.txt", b"not an image")
    src, data = SOURCES.get("imagefolder"), DataConfig(root=str(tmp_path))
    assert src.class_names(data) == ["golden retriever", "tabby cat", "zebra"]
    train, test = src.load(data, "train"), src.load(data, "test")
    assert len(train) == 7 and len(test) == 4
    assert train.targets.dtype == np.int64 and train.targets.tolist() == [0, 0, 1, 2, 2, 2, 2]
    assert train.items[-1].endswith(os.path.join("zebra", "nested", "deep.jpg"))
    assert all(isinstance(p, str) and os.path.isfile(p) for p in train.items)


def test_imagefolder_train_test_mismatch(tmp_path):
    _folder_tree(tmp_path, {"a": (1, 1), "b": (1, 0)})
    _write(tmp_path / "test" / "c" / "x.jpg")
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
    bad = _write(tmp_path / "train" / "b" / "broken.jpg", GARBAGE)
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


def test_ucf101_loads_frame_folders(tmp_path):
    _folder_tree(tmp_path, {"ApplyEyeMakeup": (3, 2), "Apply_Lipstick": (2, 1), "YoYo": (1, 1)})
    src, data = SOURCES.get("ucf101"), DataConfig(root=str(tmp_path))
    assert src.class_names(data) == ["Apply Eye Makeup", "Apply Lipstick", "Yo Yo"]
    assert len(src.load(data, "train")) == 6 and src.load(data, "test").targets.tolist() == [0, 0, 1, 2]
    assert src.template.format("Apply Eye Makeup") == "a photo of a person Apply Eye Makeup."


# ---------------------------------------------------------------- imagenet-r

WNIDS = [wnid for wnid, _ in imagenet_r_classes()]
SIZES = {0: 10, 1: 7, 2: 3}  # other classes: 2 images


def _imagenet_r_tree(parent: Path) -> Path:
    root = parent / "imagenet-r"
    for label, wnid in enumerate(WNIDS):
        for i in range(SIZES.get(label, 2)):
            _write(root / wnid / f"{['art', 'toy', 'sketch'][i % 3]}_{i}.jpg")
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


# ---------------------------------------------------------------- cub200


def _cub_tree(parent: Path, per_class: int = 4, classes: int = 3) -> Path:
    root = parent / "CUB_200_2011"
    folders = cub_folders()
    images, split, labels = [], [], []
    for image_id in range(1, classes * per_class + 1):
        label = (image_id - 1) // per_class + 1
        rel = f"{folders[label - 1]}/bird_{image_id:04d}.jpg"
        _write(root / "images" / rel)
        images.append(f"{image_id} {rel}")
        split.append(f"{image_id} {image_id % 2}")
        labels.append(f"{image_id} {label}")
    for name, lines in (("images.txt", images), ("train_test_split.txt", split), ("image_class_labels.txt", labels),
                        ("classes.txt", [f"{i + 1} {f}" for i, f in enumerate(folders)])):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def test_cub_class_names_built_in():
    names = SOURCES.get("cub200").class_names(DataConfig())
    assert len(names) == 200 == len(set(names))
    assert names[0] == "black footed albatross" and names[21] == "chuck will widow"
    assert clean_cub_name("009.Brewer_Blackbird") == "brewer blackbird"
    assert SOURCES.get("cub200").template.format(names[0]) == "a photo of a black footed albatross, a type of bird."


def test_cub_loads_official_split(tmp_path):
    root = _cub_tree(tmp_path)
    src = SOURCES.get("cub200")
    for data_root in (root, tmp_path):  # the folder itself or its parent
        train = src.load(DataConfig(root=str(data_root)), "train")
        test = src.load(DataConfig(root=str(data_root)), "test")
        assert len(train) == len(test) == 6
        assert train.targets.tolist() == [0, 0, 1, 1, 2, 2] and test.targets.tolist() == [0, 0, 1, 1, 2, 2]
        assert train.items[0].endswith(os.path.join("001.Black_footed_Albatross", "bird_0001.jpg"))
        assert test.items[0].endswith("bird_0002.jpg") and not set(train.items) & set(test.items)


def test_cub_errors(tmp_path):
    src = SOURCES.get("cub200")
    with pytest.raises(DataError, match="images.txt not found .*CUB_200_2011.tgz"):
        src.load(DataConfig(root=str(tmp_path)), "train")
    root = _cub_tree(tmp_path)
    classes = (root / "classes.txt").read_text().replace("002.Laysan_Albatross", "002.Some_Bird")
    (root / "classes.txt").write_text(classes)
    with pytest.raises(DataError, match="not the official CUB-200-2011 class list .*at id 2"):
        src.load(DataConfig(root=str(root)), "train")
    root = _cub_tree(tmp_path / "again")
    (root / "images" / cub_folders()[0] / "bird_0003.jpg").unlink()
    with pytest.raises(DataError, match="1 images listed in .*images.txt do not exist, first: .*bird_0003.jpg"):
        src.load(DataConfig(root=str(root)), "train")
    labels = root / "image_class_labels.txt"
    labels.write_text("1 1\n2 1\n")
    with pytest.raises(DataError, match="image_class_labels.txt: 10 image ids of images.txt are missing, first: 3"):
        src.load(DataConfig(root=str(root)), "test")
    labels.write_text("".join(f"{i} {201 if i == 4 else 1}\n" for i in range(1, 13)))
    with pytest.raises(DataError, match="class ids must be 1..200, found '201'"):
        src.load(DataConfig(root=str(root)), "test")
    labels.write_text("1 1\n2\n")
    with pytest.raises(DataError, match="image_class_labels.txt:2: expected '<id> <value>', got '2'"):
        src.load(DataConfig(root=str(root)), "test")


def test_cub_corrupt_image(tmp_path):
    root = _cub_tree(tmp_path)
    bad = _write(root / "images" / cub_folders()[1] / "bird_0006.jpg", GARBAGE)
    src = SOURCES.get("cub200")
    with pytest.raises(DataError, match=f"1 unreadable images, first: {bad}"):
        src.load(DataConfig(root=str(root)), "test")
    assert len(src.load(DataConfig(root=str(root), skip_corrupt=True), "test")) == 5


# ---------------------------------------------------------------- cifar100


def _fake_cifar(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(x) for x in rng.integers(0, 100, size=n)]
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * n}, f)
        arrays[split], arrays[split + "_labels"] = data, np.array(labels)
    names = [line.replace(" ", "_") for line in SOURCES.get("cifar100").class_names(DataConfig())]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": ["x"] * 20}, f)
    return arrays


def test_cifar_class_names_built_in():
    names = SOURCES.get("cifar100").class_names(DataConfig())
    assert len(names) == 100 == len(set(names))
    assert names[:3] == ["apple", "aquarium fish", "baby"] and names[-1] == "worm"
    assert names == sorted(names) and "sweet pepper" in names


def test_cifar_missing_data_message(tmp_path):
    src = SOURCES.get("cifar100")
    for data in (DataConfig(), DataConfig(root=str(tmp_path))):
        with pytest.raises(DataError) as err:
            src.load(data, "train")
        assert "--set data.root=DIR" in str(err.value) and "--set data.download=true" in str(err.value)


def test_cifar_fake_pickles_fail_md5_check(tmp_path):
    """torchvision checks the md5 of each pickle: fake files read as corrupted, with the same advice."""
    _fake_cifar(tmp_path)
    with pytest.raises(DataError, match="not found or corrupted.*data.download=true"):
        SOURCES.get("cifar100").load(DataConfig(root=str(tmp_path)), "test")


def test_cifar_rejects_unexpected_meta_names(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    _fake_cifar(tmp_path)
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    with pytest.raises(DataError, match="unexpected class names"):
        SOURCES.get("cifar100").load(DataConfig(root=str(tmp_path)), "train")


def test_cifar_loads_torchvision_layout(tmp_path, monkeypatch):
    """The md5 check is bypassed (only existence is checked) so torchvision's real reader runs on fakes."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    arrays = _fake_cifar(tmp_path)
    src = SOURCES.get("cifar100")
    for split in ("train", "test"):
        samples = src.load(DataConfig(root=str(tmp_path)), split)
        expected = arrays[split].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        assert samples.items.dtype == np.uint8 and samples.items.shape == (len(expected), 32, 32, 3)
        assert np.array_equal(samples.items, expected) and samples.items[0, 0, 0, 0] == arrays[split][0, 0]
        assert samples.targets.dtype == np.int64 and np.array_equal(samples.targets, arrays[split + "_labels"])
