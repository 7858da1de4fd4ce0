"""Typed configuration from YAML mappings: dataclasses built with near-miss errors."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from suite.core.errors import SuiteError
from suite.core.registry import Registry

C = TypeVar("C")


def _nested_types(cls: type) -> dict[str, type]:
    """The fields of ``cls`` whose type is itself a dataclass (from the annotation, else the default)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated here: fall back on the defaults
        hints = {}
    nested = {}
    for f in dataclasses.fields(cls):
        hint, default = hints.get(f.name), _default(f)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested[f.name] = hint
        elif dataclasses.is_dataclass(default) and not isinstance(default, type):
            nested[f.name] = type(default)
    return nested


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def merge_settings(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings merged key by key (``{p: {a: 1}}`` updated
    by ``{p: {b: 2}}`` is ``{p: {a: 1, b: 2}}``); neither argument is changed."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merge_settings(out[key], value) if nested else value
    return out


def from_mapping(cls: type[C], data: Mapping[str, Any] | C | None, where: str) -> C:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a near-miss hint.

    A field whose type is itself a dataclass is built from a nested mapping the same way
    (errors name the path, ``where.field``); a partial mapping is merged over the field's
    default (``perturbation: {steps: 3}`` keeps the default's other settings), and an
    already-built instance is taken as is, so ``from_mapping(cls, dataclasses.asdict(x), ...)``
    rebuilds ``x``.
    """
    if isinstance(data, cls):
        return data
    if data is not None and not isinstance(data, Mapping):
        raise SuiteError(f"{where}: expected a mapping of settings, got {data!r}")
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise SuiteError(f"{where}: unknown setting '{key}'{hint}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, nested in _nested_types(cls).items():
        value = data.get(name)
        if name not in data or isinstance(value, nested):
            continue
        if not isinstance(value, Mapping):
            raise SuiteError(f"{where}.{name}: expected a mapping of settings "
                             f"({', '.join(g.name for g in dataclasses.fields(nested))}), got {value!r}")
        default = _default(fields[name])
        if isinstance(default, nested):  # a partial mapping keeps the default's other settings
            value = merge_settings(dataclasses.asdict(default), value)
        data[name] = from_mapping(nested, value, f"{where}.{name}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in list(data.items()):
        if isinstance(value, list) and "tuple" in str(types[key]):
            data[key] = tuple(value)
        if isinstance(value, str) and "float" in str(types[key]):
            try:  # YAML reads 2e-5 as a string
                data[key] = float(value)
            except ValueError:
                raise SuiteError(f"{where}: '{key}' must be a number, got {value!r}") from None
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SuiteError(f"{where}: missing required setting(s) {', '.join(missing)}")
    return cls(**data)


def read_named_yaml(name_or_path: str, registry: Registry[Path]) -> tuple[Any, Path]:
    """A YAML file given as a path, or by its name in ``registry``: (parsed content, path)."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = registry.get(name_or_path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), path
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
