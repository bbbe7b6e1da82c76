"""Images of any size reach every backbone at its input size, from every file-based source; each pretrained
tag normalises with its own mean and std; a text tower without token embeddings stops in one line."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import dmc.data.sources  # noqa: F401  (registers every source)
from dmc.cli import main
from dmc.config import DataConfig
from dmc.data.dataset import ImageDataset
from dmc.data.sources.base import SOURCES
from dmc.errors import UserError
from dmc.models.clip import OPENAI_MEAN, OPENAI_STD, build_backbone, image_transforms, input_size
from tests.test_sources import _folder_tree, ucf_tree
from tests.test_sources_cub_cifar import _cub_tree
from tests.test_sources_imagenet_r import _imagenet_r_tree

SIZES = [(50, 37), (4, 4), (300, 120)]  # wide, tiny, very wide; none is any backbone's input size
TREES = {
    "cub200": lambda root: _cub_tree(root),
    "imagenet-r": lambda root: _imagenet_r_tree(root),
    "imagefolder": lambda root: _folder_tree(root, {"cat": (3, 3), "dog": (3, 3)}),
    "ucf101": lambda root: ucf_tree(root),
}


def _image(size: tuple[int, int], mode: str) -> Image.Image:
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Each source's fake tree, with its first training images rewritten at odd sizes (one grayscale)."""
    out = {}
    for name, build in TREES.items():
        root = build(tmp_path_factory.mktemp(name))
        data = DataConfig(root=str(root))
        samples = SOURCES.get(name).load(data, "train")
        for path, size, mode in zip(samples.items, SIZES, ("RGB", "L", "RGB")):
            _image(size, mode).save(path, format="PNG")
        out[name] = (samples, data)
    return out


@pytest.fixture(scope="module")
def backbones():
    from dmc.world import shipped, toy

    real_get_toy = shipped.get_toy
    shipped.get_toy = lambda *a, **k: toy.build_toy()  # the toy CLIP's architecture and transforms, random weights
    try:
        torch.manual_seed(0)
        return {name: build_backbone(name) for name in ("tiny", "toy", "RN50")}
    finally:
        shipped.get_toy = real_get_toy


@pytest.mark.parametrize("source", list(TREES))
@pytest.mark.parametrize("backbone", ["tiny", "toy", "RN50"])
def test_any_image_size_reaches_the_tower_at_its_input_size(trees, backbones, source, backbone):
    samples, _ = trees[source]
    b = backbones[backbone]
    side = input_size(b.model.visual)
    for transform in (b.preprocess, b.preprocess_train):
        ds = ImageDataset(samples, samples.targets, transform)
        x = torch.stack([ds[i][0] for i in range(len(SIZES))])
        assert x.shape == (len(SIZES), 3, side, side)
        if backbone == "RN50" and source != "cub200":
            continue  # a ResNet-50 forward costs seconds on CPU: once is enough for its input size
        with torch.no_grad():
            assert b.model.visual(x).isfinite().all()


def test_cub_smoke_run_with_images_of_another_size(capsys, trees):
    """The reported failure: a small CLIP on an official-layout tree whose images are not 32 x 32."""
    _, data = trees["cub200"]
    code = main(["run", "--benchmark", "cub200", "--backbone", "tiny", "--smoke", "--quiet", "--method", "dmc",
                 "--out", str(Path(data.root).parent / "run"), "--set", f"data.root={data.root}",
                 "--set", "data.num_workers=0", "--set", "benchmark.increment=1", "--set", "benchmark.order_file="
                 + _order_file(Path(data.root).parent)])
    assert code == 0, capsys.readouterr().err


def _order_file(where: Path) -> str:
    """The three classes of the fake CUB tree first, so that the smoke run's tasks have images."""
    path = where / "order.yaml"
    path.write_text(str([0, 1, 2] + list(range(3, 200))))
    return str(path)


@pytest.mark.parametrize("name, tag, mean, std", [
    ("ViT-B-16", "openai", OPENAI_MEAN, OPENAI_STD),
    ("ViT-B-16", "laion400m_e32", OPENAI_MEAN, OPENAI_STD),
    ("ViT-B-16-SigLIP", "webli", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
def test_each_pretrained_tag_normalises_with_its_own_mean_and_std(name, tag, mean, std):
    """Training and evaluation transforms alike (training used OpenAI's values for every tag)."""
    visual = SimpleNamespace(image_size=(224, 224), preprocess_cfg={})  # open_clip's defaults before weights load
    grey = Image.new("RGB", (300, 200), (128, 128, 128))
    want = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)  # (3,)
    for tf in image_transforms(SimpleNamespace(visual=visual), name, tag):
        x = tf(grey)  # a uniform image stays uniform under any crop or resize
        assert x.shape == (3, 224, 224)
        torch.testing.assert_close(x[:, 112, 112], want, atol=1e-5, rtol=0)


def test_a_text_tower_without_token_embedding_is_one_line(backbones):
    from dmc.models.prompts import PromptLearner

    custom = SimpleNamespace(**{**vars(backbones["tiny"]), "model": torch.nn.Module(), "name": "ViT-B-16-SigLIP"})
    with pytest.raises(UserError, match="has no text token embedding, which prompt learning needs") as err:
        PromptLearner(custom, "a photo of a {}.")
    assert "\n" not in str(err.value) and "SigLIP" in str(err.value)
