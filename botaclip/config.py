"""Job configurations: frozen dataclasses whose fields carry the defaults, nested where it helps.

Every job (fit, compare, ...) takes one config. Python callers may pass keyword options instead; they are set by
field name, nested configs included (``folds=3`` reaches ``FitConfig.evaluation.folds``), so

    fit_species(store, occ, "Carex firma", folds=3, model="rf")

and ``fit_species(store, occ, "Carex firma", FitConfig(model="rf", evaluation=EvaluationConfig(folds=3)))`` are
the same call. The CLI builds the config from its options and reads its defaults from the dataclasses, so every
default is written once.

A small config shared by several jobs (``StacSource``: ``stac``, ``assets``, ``sort``) is nested as an
:func:`inline` group: its fields are options of the job by their own names, and the group's name is none.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")
_INLINE = "botaclip.config.inline"


def inline(cls: type[C]) -> Any:
    """A field holding a nested config ``cls`` (default: its defaults) whose fields are reached by their own names
    only: the group's name is no option, so a job's options and CLI stay flat where a shared group is nested."""
    return dataclasses.field(default_factory=cls, metadata={_INLINE: True})


def field_names(cls) -> set[str]:
    """Every field name of a config class, nested configs' fields included (an :func:`inline` group's own name
    not)."""
    names = set()
    for f in dataclasses.fields(cls):
        default = _default(f)
        if not f.metadata.get(_INLINE):
            names.add(f.name)
        if dataclasses.is_dataclass(default):
            names |= field_names(type(default))
    return names


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def with_options(config: C, **options: Any) -> C:
    """A copy of ``config`` with ``options`` set by field name, at any depth of nesting.

    A name that is no field raises TypeError, as an unexpected keyword argument would."""
    unknown = set(options) - field_names(type(config))
    if unknown:
        raise TypeError(f"unexpected option(s) {', '.join(sorted(unknown))} for {type(config).__name__}")
    return _replace(config, options)


def _replace(config, options: dict[str, Any]):
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in options:
            changes[f.name] = options[f.name]
        elif dataclasses.is_dataclass(value):
            inner = {k: v for k, v in options.items() if k in field_names(type(value))}
            if inner:
                changes[f.name] = _replace(value, inner)
    return dataclasses.replace(config, **changes) if changes else config


def build(cls: type[C], config: C | None = None, **options: Any) -> C:
    """``config`` (or the defaults of ``cls``) with ``options`` applied by field name.

    Without ``config``, fields of ``cls`` that have no default must be among ``options`` (TypeError otherwise)."""
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    if config is not None:
        return with_options(config, **options)
    unknown = set(options) - field_names(cls)
    if unknown:
        raise TypeError(f"unexpected option(s) {', '.join(sorted(unknown))} for {cls.__name__}")
    # Everything goes to the constructor: top-level fields (so that fields without a default can be given) and the
    # nested configs already built with their options (so that the job's own checks see them).
    given = {k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(cls)}}
    for f in dataclasses.fields(cls):
        default = _default(f)
        if f.name not in given and dataclasses.is_dataclass(default):
            inner = {k: v for k, v in options.items() if k in field_names(type(default))}
            if inner:
                given[f.name] = _replace(default, inner)
    return cls(**given)


def default(cls, name: str) -> Any:
    """The default of field ``name`` of ``cls`` (searched in nested configs too): what a CLI option shows."""
    for f in dataclasses.fields(cls):
        value = _default(f)
        if f.name == name:
            return value
        if dataclasses.is_dataclass(value) and name in field_names(type(value)):
            return default(type(value), name)
    raise KeyError(name)
