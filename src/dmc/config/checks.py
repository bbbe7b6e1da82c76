"""Checks of config values, shared by every section: one message format, run when a config is resolved.

Each section states what its fields accept in `check`; `validate` runs every check on the final values
(after presets and overrides) and names the whole key, so a typo fails in one line before any backbone or
data is loaded. Code below the config trusts these values and does not check them again.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Sequence

from dmc.errors import UserError
from dmc.registry import locate


class BadValue(UserError, ValueError):
    """A field holds a value it does not accept; `field` is the key as far as it is known. A user error
    (the CLI reports it in one line) and a ValueError (for code that builds sections directly)."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"bad value for {field}: {value!r}; {expected}")
        self.field, self.value, self.expected = field, value, expected

    def under(self, section: str) -> BadValue:
        """The same error, with the key path of the section in front (`trainable` -> `vision.trainable`)."""
        return BadValue(f"{section}.{self.field}", self.value, self.expected)


PLUGS: dict[type, dict[str, type | str]] = {}  # host config class -> {name: section class, or where it is}


class Section:
    """Base of the config sections: values are checked when a section is built and again by `validate`
    (overrides set fields one by one, after construction).

    A section with a `plugged` field (`RunConfig`, `DataConfig`) also holds the sections others plug into it
    (`plug`): read as attributes, set with `--set`, saved and checked like its own fields. A section plugged
    by where it lives (a "package.module:Class" string) joins a config only when it is first read or set,
    so a run saves the sections it used and loading a config imports only the modules it names."""

    def __post_init__(self) -> None:
        plugged = self.__dict__.get("plugged")
        if plugged is not None:
            for name, cls in PLUGS.get(type(self), {}).items():
                if not isinstance(cls, str):
                    plugged.setdefault(name, cls())
        self.check()

    def __getattr__(self, name: str) -> Any:  # only reached for names that are not fields: plugged sections
        plugged = self.__dict__.get("plugged")
        if plugged is not None and name in plugged:
            return plugged[name]
        target = PLUGS.get(type(self), {}).get(name) if plugged is not None else None
        if isinstance(target, str):  # plugged by name: imported and built on first use
            plugged[name] = locate(target)()
            return plugged[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def check(self) -> None:
        """Raise BadValue for a field outside what it accepts (nothing to check by default)."""


def plug(host: type, name: str, section: type | str) -> None:
    """Make `section` a sub-section `name` of every `host` config built from now on: how a method's own
    options join `RunConfig` (the method table) and the glyph world's settings join `DataConfig`, without
    the host's file naming them. `section` given as "package.module:Class" is imported, and the section
    built, only when a config first reads or sets it (the glyph world's `data.world`)."""
    if name in {f.name for f in dataclasses.fields(host)}:
        raise ValueError(f"{host.__name__} already has a field {name!r}")
    known = PLUGS.setdefault(host, {})
    if known.get(name, section) != section:
        raise ValueError(f"config section {name!r} of {host.__name__} plugged twice")
    known[name] = section


def lazy_plugs(section: object) -> list[str]:
    """The names of the sections plugged by name into `section` that it does not hold yet (reading one,
    `getattr(section, name)`, imports and builds it)."""
    plugged = section.__dict__.get("plugged")
    if plugged is None:
        return []
    return [n for n, cls in PLUGS.get(type(section), {}).items() if isinstance(cls, str) and n not in plugged]


def fields_of(section: object) -> dict[str, Any]:
    """Name -> type of every field of a config object, in order, its plugged sections last."""
    hints = typing.get_type_hints(type(section))
    out = {f.name: hints[f.name] for f in dataclasses.fields(section) if f.name != "plugged"}
    out.update({name: type(value) for name, value in section.__dict__.get("plugged", {}).items()})
    return out


def one_of(section: object, name: str, choices: Sequence[str], shown: str | None = None) -> None:
    """The field is one of `choices`; the message lists them (or `shown`, for choices with a pattern)."""
    value = getattr(section, name)
    if value not in choices:
        raise BadValue(name, value, f"choose one of: {shown or ', '.join(choices)}")


def matches(section: object, name: str, pattern: str, shown: str) -> None:
    """The field (a string) matches `pattern` entirely; `shown` says what is accepted."""
    value = getattr(section, name)
    if not re.fullmatch(pattern, value):
        raise BadValue(name, value, f"choose one of: {shown}")


def at_least(section: object, low: float, *names: str) -> None:
    """Each named field is >= low (None, where a field allows it, passes)."""
    for name in names:
        value = getattr(section, name)
        if value is not None and value < low:
            raise BadValue(name, value, f"must be >= {low}")


def positive(section: object, *names: str) -> None:
    """Each named field is > 0 (None, where a field allows it, passes)."""
    for name in names:
        value = getattr(section, name)
        if value is not None and value <= 0:
            raise BadValue(name, value, "must be > 0")


def stage_epochs(section: object, off: str) -> None:
    """`epochs` of a training stage is >= 1: zero epochs would skip the stage while the run keeps the
    method's name; `off` says how the stage is switched off on purpose."""
    value = getattr(section, "epochs")
    if value < 1:
        raise BadValue("epochs", value, f"must be >= 1 (to skip this stage on purpose: {off})")


def within(section: object, name: str, low: float, high: float) -> None:
    """The field lies in [low, high]."""
    value = getattr(section, name)
    if not low <= value <= high:
        raise BadValue(name, value, f"must be in [{low}, {high}]")
