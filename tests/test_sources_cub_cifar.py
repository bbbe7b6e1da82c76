"""CUB-200-2011 and CIFAR-100 in their official layouts, faked (no download, no real data)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import dmc.data.sources  # noqa: F401  (registers every source)
from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES
from dmc.data.sources.cub200 import clean_cub_name, cub_folders
from dmc.errors import DataError
from tests.image_files import GARBAGE, write_file


# ---------------------------------------------------------------- cub200


def _cub_tree(parent: Path, per_class: int = 4, classes: int = 3) -> Path:
    root = parent / "CUB_200_2011"
    folders = cub_folders()
    images, split, labels = [], [], []
    for image_id in range(1, classes * per_class + 1):
        label = (image_id - 1) // per_class + 1
        rel = f"{folders[label - 1]}/bird_{image_id:04d}.jpg"
        write_file(root / "images" / rel)
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
    bad = write_file(root / "images" / cub_folders()[1] / "bird_0006.jpg", GARBAGE)
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
