"""Typed configuration from YAML mappings: dataclasses built with near-miss errors."""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from suite.core.errors import SuiteError
from suite.core.registry import Registry

C = TypeVar("C")


def from_mapping(cls: type[C], data: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a near-miss hint."""
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise SuiteError(f"{where}: unknown setting '{key}'{hint}")
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
