"""The shape of the code: every import points down a layer (tools/layers.py), nothing imports in a circle
(units or files), docs/architecture.md's table is the one the code gives, and no function is long."""
import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("layers", ROOT / "tools" / "layers.py")
layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layers)
MAX_FUNCTION_LINES = 60  # signature, docstring and body


def test_every_import_points_down_and_nothing_imports_in_a_circle():
    problems = layers.check(ROOT / "src" / "dmc")
    assert not problems, "imports against the layers (see tools/layers.py):\n" + "\n".join(problems)


def _package(tmp_path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "src" / "dmc"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_check_finds_upward_arrows_circles_and_units_without_a_layer(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "config/__init__.py": "from dmc.methods import rapf\n",  # config -> methods: up
        "methods/__init__.py": "from . import rapf\n",
        "methods/rapf.py": "def f():\n    from dmc.engine import loop  # inside a function: counts too\n",
        "engine/loop.py": "from dmc import methods, config\n",
        "extras.py": "import dmc.errors\n",
        "errors.py": "",
    })
    problems = "\n".join(layers.check(pkg))
    assert ("src/dmc/config/__init__.py:1: config (config) imports dmc.methods.rapf (methods), a higher layer"
            in problems)
    assert "src/dmc/methods/rapf.py:2: methods (methods) imports dmc.engine.loop (engine), a higher layer" in problems
    assert "circle among units config, engine, methods:" in problems
    assert "unit 'extras' is in no layer" in problems


def test_the_check_fails_when_any_library_file_imports_the_lab(tmp_path):
    """The package's `__init__` is a library unit like any other: importing `world` (or `bench`) from it, or
    from a file deep in a library package, is refused; the command line may import the lab."""
    pkg = _package(tmp_path, {
        "__init__.py": "from dmc import world  # registers the glyph world\n",
        "data/sources/extra.py": "def f():\n    import dmc.bench\n",
        "catalog.py": 'LAB = {"glyphs": "dmc.world.source:GLYPHS"}  # a name, not an import\n',
        "world/__init__.py": "from dmc.catalog import LAB\n",
        "bench.py": "from dmc.world import source\n",
        "world/source.py": "",
        "cli.py": "from dmc.world import source\nimport dmc.bench\n",
    })
    problems = layers.check(pkg)
    assert problems == [
        "src/dmc/__init__.py:1: __init__ (package) imports dmc.world (lab), the lab, which the library never imports",
        "src/dmc/data/sources/extra.py:2: data (data) imports dmc.bench (lab), the lab, which the library never "
        "imports",
    ]


def test_the_check_finds_a_circle_between_files_of_one_package(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "methods/__init__.py": "from dmc.methods.base import Method\n",
        "methods/base.py": "def table():\n    from dmc.methods import dmc\n",  # base -> dmc.py
        "methods/dmc.py": "from dmc.methods.base import Method\n",  # dmc.py -> base: a circle in one unit
        "methods/rapf.py": "from dmc.methods import base\n",  # a module, not the package: no circle
    })
    problems = layers.check(pkg)
    assert problems == ["circle among files src/dmc/methods/base.py, src/dmc/methods/dmc.py: "
                        "src/dmc/methods/base.py -> src/dmc/methods/dmc.py (line 2); "
                        "src/dmc/methods/dmc.py -> src/dmc/methods/base.py (line 1)"]


def test_the_architecture_document_holds_the_layers_the_code_gives():
    """docs/architecture.md's table is `python tools/layers.py --markdown`, between its markers."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    begin, end = "<!-- layers: begin (python tools/layers.py --markdown) -->\n", "\n<!-- layers: end -->"
    assert begin in doc and end in doc, "docs/architecture.md lost its layer-table markers"
    shown = doc.split(begin, 1)[1].split(end, 1)[0]
    assert shown == layers.markdown(ROOT / "src" / "dmc"), \
        "docs/architecture.md's layer table is stale: paste the output of python tools/layers.py --markdown"


def long_functions(package: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods longer than `limit` lines (from `def` to their last line), as file:line."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.name} has {length} lines")
    return out


def test_no_function_is_longer_than_sixty_lines(tmp_path):
    long = long_functions(ROOT / "src" / "dmc")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert [line.split(": ", 1)[1] for line in long_functions(tmp_path)] == [f"f has {MAX_FUNCTION_LINES + 1} lines"]
