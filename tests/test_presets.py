"""Every preset resolves with every method; every config field is documented with its provenance."""
from pathlib import Path

import pytest

from dmc import config
from dmc.data.sources.base import SOURCES
from dmc.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("benchmark", ["glyphs", "cifar100", "imagenet-r", "cub200", "ucf101", "synthetic"])
def test_presets_resolve_for_every_method(benchmark):
    import dmc.data.sources  # noqa: F401

    assert benchmark in SOURCES
    for method in METHODS.names():
        cfg = config.resolve(benchmark, method)
        assert cfg.benchmark.name == benchmark and cfg.method == method


def test_paper_presets_follow_the_protocols():
    inc = {"cifar100": 10, "imagenet-r": 20, "cub200": 20, "ucf101": 10}
    epochs = {"cifar100": 3, "imagenet-r": 5, "cub200": 10, "ucf101": 5}
    for name, increment in inc.items():
        cfg = config.resolve(name, "dmc-ot")
        assert cfg.benchmark.increment == increment and cfg.benchmark.base == 0
        assert cfg.model.backbone == "ViT-B-16" and cfg.model.pretrained == "openai"
        assert cfg.seed == 1993 and cfg.vision.epochs == epochs[name] and cfg.checkpoint.keep == "last"
        assert config.resolve(name, "rapf").rapf.epochs == 15  # the base's per_method block
        text = (ROOT / "src" / "dmc" / "configs" / "benchmarks" / f"{name}.yaml").read_text()
        assert "extends: vit-b16" in text and "backbone" not in text  # the shared recipe is stated once


def test_a_preset_overrides_its_base_field_by_field():
    from dmc.config.resolve import _merge

    base = {"vision": {"lr": 1e-5, "epochs": 5}, "per_method": {"rapf": {"rapf": {"epochs": 15}}}}
    assert _merge(base, {"vision": {"epochs": 3}}) == {"vision": {"lr": 1e-5, "epochs": 3},
                                                      "per_method": {"rapf": {"rapf": {"epochs": 15}}}}


def test_method_presets_differ_where_the_method_does():
    dmc, dmc_ot, cotrain = (config.resolve("glyphs", m) for m in ("dmc", "dmc-ot", "cotrain"))
    assert dmc.calibration.method == "none" and dmc.prompt.task_tokens == 0 and dmc.dmc.decoupled
    assert dmc_ot.calibration.method == "ot" and dmc_ot.prompt.task_tokens > 0
    assert not cotrain.dmc.decoupled


def test_every_config_field_is_documented():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "tools" / "config_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    doc = (ROOT / "docs" / "method.md").read_text()
    missing = [key for key, *_ in table.rows(config.RunConfig(), "") if f"`{key}`" not in doc]
    assert not missing, f"fields missing from docs/method.md (run tools/config_table.py): {missing}"
