"""CLIP towers, the prompt learner and PROOF's projections. `BACKBONES` names every backbone without
importing torch (the command line checks names before torch loads); a builder is imported when a run
first builds its backbone. Other packages add theirs (the lab's `toy`: `dmc.catalog.LAB`)."""
from dmc.registry import Registry

BACKBONES: Registry = Registry("backbone")  # name -> builder(pretrained: str | None) -> clip.Backbone
BACKBONES.add("tiny", "dmc.models.clip:build_tiny")
BACKBONES.add("ViT-B-16", "dmc.models.clip:build_vit_b16")
