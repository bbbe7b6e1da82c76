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


class ArrayNormalize:
    """uint8 HWC array (or PIL image) -> normalised float CHW tensor, without resizing.

    Used for backbones whose input size equals the images' (the toy/tiny CLIP on 32x32 glyphs), where a PIL
    round trip per image would cost more than the model's forward pass.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
        return self.batch(arr[None])[0]

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, 3, H, W): a whole batch in one tensor op (in-memory datasets)."""
        x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std


def pil_then(transform: Callable[[Image.Image], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a PIL-only transform (open_clip's preprocess) so that arrays are accepted too."""

    def apply(img: Image.Image | np.ndarray) -> torch.Tensor:
        return transform(to_pil(img))

    return apply
