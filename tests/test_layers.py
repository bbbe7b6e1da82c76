"""The import structure: every arrow points down a layer (tools/layers.py), and nothing forms a circle."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("layers", ROOT / "tools" / "layers.py")
layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layers)


def test_every_import_points_down_and_no_unit_imports_in_a_circle():
    problems = layers.check(ROOT / "src" / "dmc")
    assert not problems, "imports against the layers (see tools/layers.py):\n" + "\n".join(problems)


def test_the_check_finds_upward_arrows_circles_and_units_without_a_layer(tmp_path):
    pkg = tmp_path / "src" / "dmc"
    for rel, text in {
        "__init__.py": "",
        "config/__init__.py": "from dmc.methods import rapf\n",  # config -> methods: up
        "methods/__init__.py": "from . import rapf\n",
        "methods/rapf.py": "def f():\n    from dmc.engine import loop  # inside a function: counts too\n",
        "engine/loop.py": "from dmc import methods, config\n",
        "extras.py": "import dmc.errors\n",
        "errors.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    problems = "\n".join(layers.check(pkg))
    assert "src/dmc/config/__init__.py:1: config (config) imports dmc.methods (methods), a higher layer" in problems
    assert "src/dmc/methods/rapf.py:2: methods (methods) imports dmc.engine (engine), a higher layer" in problems
    assert "circle among config, engine, methods:" in problems
    assert "unit 'extras' is in no layer" in problems
