"""Dataset sources. Importing this package registers every benchmark of the library in `SOURCES` (the lab's
glyph worlds are known by name, `dmc.catalog.LAB`)."""
from dmc.data.sources import cifar100, cub200, imagefolder, imagenet_r, synthetic, ucf101  # noqa: F401  (registration)
