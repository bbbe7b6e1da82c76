"""Print the Markdown table of every config field (default, meaning, provenance) for docs/method.md.

Reads the dataclass definitions' trailing comments, so the docs and the code cannot drift apart:
`python tools/config_table.py`; tests/test_presets.py checks that every field is documented.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys

from dmc.catalog import register_lab
from dmc.config import RunConfig, fields_of, lazy_plugs


def rows(section_obj, prefix: str):
    """(key, default, meaning, provenance) of every field of the package, plugged sections (each method's
    own, the glyph world's) included."""
    for name in lazy_plugs(section_obj):  # sections plugged by name (the lab's `data.world`) are documented too
        getattr(section_obj, name)
    src = inspect.getsource(type(section_obj))
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", src, flags=re.M))
    for name in fields_of(section_obj):
        value = getattr(section_obj, name)
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(value):
            if type(value).__module__.split(".")[0] == "dmc":  # not a section a method outside dmc brought
                yield from rows(value, key + ".")
            continue
        note = comments.get(name, "")
        prov = re.findall(r"\[(paper[^\]]*|released[^\]]*|reconstruction|beyond the paper)\]", note)
        note = re.sub(r"\s*\[(paper[^\]]*|released[^\]]*|reconstruction|beyond the paper)\]\s*", " ", note).strip()
        note = note.replace("|", "/")
        yield key, value, note, prov[0] if prov else "harness"


def main() -> None:
    register_lab()
    cfg = RunConfig()
    print("| key | default | meaning | provenance |")
    print("|---|---|---|---|")
    for key, value, note, prov in rows(cfg, ""):
        print(f"| `{key}` | `{value!r}` | {note} | {prov} |")


if __name__ == "__main__":
    sys.exit(main())
