"""CLIP towers, the toy CLIP and prompt learners. Importing the package registers every backbone."""
from dmc.models import toy  # noqa: F401  (registers the "toy" backbone in clip.BACKBONES)
