"""Reading YAML safely: the one reader of every YAML input (order files, `--set` values, `sweep.yaml`,
`config.yaml`, presets).

`yaml.safe_load` builds no objects of its own, but it still builds any document it is given: a document
nested thousands of levels deep ends in a RecursionError, and a few lines of aliases (a "billion laughs")
expand into gigabytes as soon as the tree is walked (a digest, an error message). So the document's events
are scanned first (PyYAML's parser keeps its own stack, it does not recurse) and a document nested deeper
than `MAX_DEPTH` or whose nodes, aliases expanded, number more than `MAX_NODES` is refused in one line
before anything is built.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from dmc.errors import UserError

MAX_DEPTH = 64  # nested lists and mappings; a config is 3 deep, a class order 2
MAX_NODES = 1_000_000  # scalars, lists and mappings, every alias counted as what it stands for


class YAMLRefused(UserError):
    """A YAML document refused before it was built (too deep, too large once aliases are expanded)."""


def _check(text: str) -> None:
    """Scan the events of `text`; YAMLRefused when it is nested too deep or expands past `MAX_NODES`."""
    frames: list[list] = []  # per open list or mapping: [its anchor, nodes in it so far]
    sizes: dict[str, int] = {}  # anchor -> nodes of the node it names (aliases expanded)
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(frames) >= MAX_DEPTH:
                raise YAMLRefused(f"it is nested deeper than {MAX_DEPTH} levels")
            frames.append([event.anchor, 1])
            n = 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = frames.pop()
            if anchor is not None:
                sizes[anchor] = size
            if frames:
                frames[-1][1] += size
            continue
        elif isinstance(event, yaml.ScalarEvent):
            n = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            n = sizes.get(event.anchor, 1)
        else:
            continue
        total += n
        if frames and not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            frames[-1][1] += n
        if total > MAX_NODES:
            raise YAMLRefused(f"it holds more than {MAX_NODES} values once its aliases are expanded")


def loads(text: str, what: str) -> object:
    """The value of the YAML document `text`; refused in one line naming `what` when it is not YAML, is
    nested deeper than `MAX_DEPTH` or expands past `MAX_NODES`."""
    try:
        _check(text)
        return yaml.safe_load(text)
    except YAMLRefused as exc:
        raise YAMLRefused(f"cannot read {what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"cannot read {what}: {_first_line(exc)}") from None
    except RecursionError:  # a limit above should prevent it; never a traceback
        raise YAMLRefused(f"cannot read {what}: it is nested too deep") from None


def read(path: str | Path, what: str) -> object:
    """The value of the YAML file at `path` (see `loads`); a missing file or one that is not UTF-8 text
    is a UserError in one line naming `what`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot read {what}: it is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror or exc}") from None
    return loads(text, what)


def _first_line(exc: Exception) -> str:
    """The first line of a YAML error, cut to a readable length."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    return lines[0][:300]
