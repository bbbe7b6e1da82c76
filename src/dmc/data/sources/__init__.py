"""Dataset sources. Importing this package registers every benchmark in `SOURCES`."""
from dmc.data.sources import cifar100, cub200, imagefolder, imagenet_r, ucf101  # noqa: F401  (registration)
from dmc.data.sources import glyphs, synthetic  # noqa: F401  (registration)
