"""The linter as part of the suite: `ruff check src tests tools` with the rules in pyproject.toml (pyflakes,
pycodestyle's errors and warnings, lines of at most 120 characters), so CI, which runs pytest, runs it too."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed (pip install -e '.[test]' brings it)")


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_ruff_finds_nothing():
    done = ruff("src", "tests", "tools")
    assert done.returncode == 0, f"ruff check src tests tools:\n{done.stdout}{done.stderr}"


def test_ruff_reads_the_projects_rules(tmp_path):
    """The check can fail: a line of 121 characters and an unused import are found with pyproject's rules."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n" + "x = '" + "a" * 115 + "'\n")
    done = ruff("--config", str(ROOT / "pyproject.toml"), "--output-format", "concise", str(bad))
    assert done.returncode == 1
    assert "F401" in done.stdout and "E501" in done.stdout and "(121 > 120)" in done.stdout, done.stdout
