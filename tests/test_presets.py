"""Every preset resolves with every method; every config field is documented with its provenance."""
from pathlib import Path

import pytest

from dmc import config
from dmc.data.sources.base import SOURCES
from dmc.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("benchmark", ["glyphs", "glyphs-shift", "cifar100", "imagenet-r", "cub200", "ucf101",
                                       "synthetic"])
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


# The recipe every method gets on a benchmark: backbone, vision lr / epochs, prompt lr / epochs, RAPF lr / epochs.
RECIPES = {
    "glyphs": ("toy", 3e-5, 5, 2e-3, 5, 1e-3, 15),
    "glyphs-shift": ("toy", 3e-5, 5, 2e-3, 5, 1e-3, 15),  # world v3: the glyph recipe, nothing tuned there
    "synthetic": ("tiny", 3e-5, 5, 2e-3, 5, 1e-3, 15),
    "cifar100": ("ViT-B-16", 1e-5, 3, 2e-3, 5, 1e-3, 15),
    "imagenet-r": ("ViT-B-16", 1e-5, 5, 2e-3, 5, 1e-3, 15),
    "cub200": ("ViT-B-16", 1e-5, 10, 2e-3, 5, 1e-3, 15),
    "ucf101": ("ViT-B-16", 1e-5, 5, 2e-3, 5, 1e-3, 15),
    "imagefolder": ("ViT-B-16", 1e-5, 5, 2e-3, 5, 1e-3, 15),
}
KEYS = ("model.backbone", "vision.lr", "vision.epochs", "prompt.lr", "prompt.epochs", "rapf.lr", "rapf.epochs")
# ... and the only pairs that differ from their benchmark's recipe, with their values
EXCEPTIONS = {
    ("glyphs", "joint"): {"vision.lr": 3e-3},  # the glyph world's joint recipe (world v2), not ViT-B/16's
    ("glyphs", "dmc-ot"): {"vision.lr": 1e-5},  # world v2's validation choice (benchmarks/glyphs.yaml)
    ("glyphs", "dmc"): {"vision.lr": 1e-5},  # DMC-OT's stage 1, the same lr
    ("glyphs", "dmc-ot-mem"): {"vision.lr": 1e-5},  # trains as DMC-OT
    ("glyphs-shift", "joint"): {"vision.lr": 3e-3},  # the glyph recipe (configs/bases/glyphs.yaml)
    ("imagenet-r", "rapf"): {"rapf.hinge_threshold": 0.6, "rapf.fusion_bias": 0.7},  # RAPF's released values
}


def _get(cfg, key):
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


@pytest.mark.parametrize("benchmark", list(RECIPES))
def test_every_method_gets_its_benchmarks_recipe(benchmark):
    """The resolved learning rates and epochs of every method x benchmark pair: a generic method preset
    never overrides a benchmark's recipe (joint's glyph-world lr once reached ViT-B/16 runs)."""
    rows = []
    for method in METHODS.names():
        cfg = config.resolve(benchmark, method)
        want = {**dict(zip(KEYS, RECIPES[benchmark])), **EXCEPTIONS.get((benchmark, method), {})}
        got = {key: _get(cfg, key) for key in want}
        rows.append(f"{benchmark:11} {method:9} " + " ".join(f"{k}={v}" for k, v in got.items()))
        assert got == want, f"{benchmark} x {method}"
        if (benchmark, method) != ("imagenet-r", "rapf"):
            assert (cfg.rapf.hinge_threshold, cfg.rapf.fusion_bias) == (0.55, 0.6)
    print("\n".join(rows))


def test_method_presets_hold_no_benchmark_setting():
    """A method preset says what the method is; any key a benchmark preset (or its base) states belongs
    to the benchmark, per method in its `per_method` block."""
    from dmc.config.resolve import _preset, flatten

    for method in METHODS.names():
        own = set(METHODS.preset(method))
        for benchmark in RECIPES:
            tree = _preset("benchmarks", benchmark)
            tree.pop("per_method", None)
            assert not own & set(flatten(tree)), f"{method} preset sets {own & set(flatten(tree))} of {benchmark}"


def test_a_preset_overrides_its_base_field_by_field():
    from dmc.config.resolve import _merge

    base = {"vision": {"lr": 1e-5, "epochs": 5}, "per_method": {"rapf": {"rapf": {"epochs": 15}}}}
    assert _merge(base, {"vision": {"epochs": 3}}) == {"vision": {"lr": 1e-5, "epochs": 3},
                                                      "per_method": {"rapf": {"rapf": {"epochs": 15}}}}


def test_method_presets_differ_where_the_method_does():
    from dmc.methods.cotrain import CoTrain
    from dmc.methods.dmc import DMC

    dmc, dmc_ot, cotrain = (config.resolve("glyphs", m) for m in ("dmc", "dmc-ot", "cotrain"))
    assert dmc.calibration.method == "none" and dmc.prompt.task_tokens == 0
    assert dmc_ot.calibration.method == "ot" and dmc_ot.prompt.task_tokens > 0
    assert cotrain.calibration.method == "none"
    assert issubclass(METHODS.get("dmc-ot"), DMC) and METHODS.get("dmc-ot") is not DMC
    assert METHODS.get("cotrain") is CoTrain and not issubclass(CoTrain, DMC)  # not decoupled: its own class


def test_every_config_field_is_documented():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "tools" / "config_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    doc = (ROOT / "docs" / "method.md").read_text()
    missing = [key for key, *_ in table.rows(config.RunConfig(), "") if f"`{key}`" not in doc]
    assert not missing, f"fields missing from docs/method.md (run tools/config_table.py): {missing}"


def test_configs_saved_with_the_old_cotrain_switch_still_load(tmp_path):
    import yaml

    from dmc.errors import UserError

    tree = config.to_dict(config.resolve("glyphs", "dmc-ot"))
    for method, decoupled, ok in (("dmc-ot", True, True), ("cotrain", False, True), ("dmc", False, False)):
        saved = {**tree, "method": method, "dmc": {"decoupled": decoupled}}
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(saved))
        if ok:
            assert config.load(path).method == method
        else:
            with pytest.raises(UserError, match="cotrain"):
                config.load(path)


def test_proof_step_budget_is_the_glyph_worlds_own():
    """The glyph worlds run PROOF at the step budget chosen on world v2's validation split (batch 16 x 15
    epochs); the real benchmarks keep PROOF's released configs (epochs x batch)."""
    want = {"glyphs": (15, 16), "glyphs-shift": (15, 16), "cifar100": (5, 64), "imagenet-r": (10, 48),
            "cub200": (10, 64), "ucf101": (10, 64)}
    for benchmark, (epochs, batch) in want.items():
        p = config.resolve(benchmark, "proof").proof
        assert (p.epochs, p.batch_size) == (epochs, batch), benchmark
    assert config.resolve("glyphs", "dmc-ot").proof.batch_size == 64  # a method's own block only
