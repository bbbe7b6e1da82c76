"""Image transforms that accept both PIL images and uint8 HWC arrays (in-memory benchmarks)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image


def to_pil(img: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    return Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """The image at size x size, as CLIP's evaluation transform does it: the shorter side resized to
    `size` (bicubic), then the centre cropped. An image already at that size is returned as it is."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


class ArrayNormalize:
    """uint8 HWC array (or PIL image) -> normalised float CHW tensor at the backbone's input size.

    Used for the small CLIPs (toy, tiny), whose 32x32 input is the glyph world's and CIFAR's image size:
    images already at `size` skip every PIL step (a round trip per image would cost more than the model's
    forward pass); any other image is brought to `size` first (`fit_square`), so file-based benchmarks
    work with these backbones too. `size` None leaves images as they are.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.size = size

    def sized(self, size: int) -> ArrayNormalize:
        """The same normalisation, bringing every image to size x size."""
        return ArrayNormalize(self.mean.flatten().tolist(), self.std.flatten().tolist(), size)

    def _fit(self, img: Image.Image | np.ndarray) -> np.ndarray:
        arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
        if self.size is None or (arr.ndim == 3 and arr.shape[:2] == (self.size, self.size) and arr.shape[2] == 3):
            return arr
        return np.asarray(fit_square(to_pil(arr), self.size), dtype=np.uint8)

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        return self.batch(self._fit(img)[None])[0]

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, 3, size, size): a whole batch in one tensor op (in-memory datasets)."""
        if self.size is not None and tuple(images.shape[1:3]) != (self.size, self.size):
            images = np.stack([self._fit(img) for img in images]) if len(images) else np.zeros(
                (0, self.size, self.size, 3), np.uint8)
        x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std


def pil_then(transform: Callable[[Image.Image], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a PIL-only transform (open_clip's preprocess) so that arrays are accepted too."""

    def apply(img: Image.Image | np.ndarray) -> torch.Tensor:
        return transform(to_pil(img))

    return apply
