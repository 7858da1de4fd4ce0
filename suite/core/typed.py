"""Typed configuration from YAML mappings: dataclasses built with near-miss errors."""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
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


class SettingError(SuiteError):
    """A setting's value out of range, raised by a typed config's ``__post_init__``.

    ``from_mapping`` prefixes where the setting is (``<file>: train.epochs: must be >= 1, got 0``);
    built directly, the message starts with the key.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def require(ok: bool, key: str, problem: str) -> None:
    """Raise :class:`SettingError` ``key: problem`` unless ``ok``."""
    if not ok:
        raise SettingError(key, problem)


def at_least(obj: Any, minimum: float, *keys: str, hint: str = "") -> None:
    """Each of ``obj``'s ``keys`` is None or >= ``minimum`` (``hint`` says what else to write)."""
    for key in keys:
        value = getattr(obj, key)
        require(value is None or value >= minimum, key, f"must be >= {minimum}{hint}, got {value!r}")


def _at(where: str, key: str) -> str:
    """Where a setting is: ``<source>: <path>.<key>``, or ``<source>: <key>`` at the top level."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _describe(hint: Any) -> str | None:
    """What a value of type ``hint`` reads as in an error; None: a type this module does not check."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = _describe(next(a for a in args if a is not type(None)))
        return f"{inner} or null" if inner else None
    if origin is tuple or hint is tuple:
        inner = _describe(args[0]) if len(args) == 2 and args[1] is Ellipsis else None
        plural = {"an integer": "integers", "a number": "numbers", "a string": "strings",
                  "true or false": "true / false values"}.get(inner or "")
        return f"a list of {plural}" if plural else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return None


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (a quoted number: remove the quotes)"
    return ""


def check_type(value: Any, hint: Any, at: str) -> Any:
    """``value`` as a setting of type ``hint`` (int, float, str, bool, ``X | None``, ``tuple[X, ...]``,
    ``dict[str, X]``), else one-line :class:`SuiteError` ``<at>: must be <type>, got <value>``.

    A list becomes a tuple for a tuple type; a string is a number for a float type (YAML reads
    ``2e-5`` as a string); an integer is a number, a bool is not an integer. Other types (Any, a
    dataclass, a class) are taken as they are.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def fail() -> typing.NoReturn:
        raise SuiteError(f"{at}: must be {_describe(hint)}, got {value!r}{_quoted(value)}")

    if hint is bool:
        if not isinstance(value, bool):
            fail()
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
    elif hint is float:
        if isinstance(value, str):
            try:  # YAML reads 2e-5 as a string
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
    elif hint is str:
        if not isinstance(value, str):
            fail()
    elif origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        if value is not None:
            inner = next(a for a in args if a is not type(None))
            try:
                return check_type(value, inner, at)
            except SuiteError:
                if _describe(inner) is None:
                    raise
                fail()
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        if len(args) == 2 and args[1] is Ellipsis and _describe(args[0]) is not None:
            try:
                return tuple(check_type(v, args[0], at) for v in value)
            except SuiteError:
                fail()
        return tuple(value)
    elif origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            fail()
        if len(args) == 2 and _describe(args[1]) is not None:
            return {k: check_type(v, args[1], f"{at}.{k}") for k, v in value.items()}
    return value


def _hints(cls: type) -> dict[str, Any] | None:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated here: no type checks
        return None


def from_mapping(cls: type[C], data: Mapping[str, Any] | C | None, where: str) -> C:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a near-miss hint.

    A field whose type is itself a dataclass is built from a nested mapping the same way
    (errors name the path, ``where.field``); a partial mapping is merged over the field's
    default (``perturbation: {steps: 3}`` keeps the default's other settings), and an
    already-built instance is taken as is, so ``from_mapping(cls, dataclasses.asdict(x), ...)``
    rebuilds ``x``. Every other value is checked against its field's annotation
    (:func:`check_type`), and a :class:`SettingError` (or other ``SuiteError``) raised by the
    class itself is prefixed with ``where``: each error is one line naming the setting.
    """
    if isinstance(data, cls):
        return data
    if data is not None and not isinstance(data, Mapping):
        raise SuiteError(f"{where}: expected a mapping of settings, got {data!r}")
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise SuiteError(f"{where}: unknown setting '{key}'{hint}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    nested_types = _nested_types(cls)
    for name, nested in nested_types.items():
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
    hints = _hints(cls)
    for key, value in list(data.items()):
        if key in nested_types:
            continue
        if hints is not None:
            data[key] = check_type(value, hints[key], _at(where, key))
            continue
        declared = str(fields[key].type)  # annotations not resolvable: the old, name-based coercions
        if isinstance(value, list) and "tuple" in declared:
            data[key] = tuple(value)
        if isinstance(value, str) and "float" in declared:
            try:
                data[key] = float(value)
            except ValueError:
                raise SuiteError(f"{_at(where, key)}: must be a number, got {value!r}") from None
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SuiteError(f"{where}: missing required setting(s) {', '.join(missing)}")
    try:
        return cls(**data)
    except SettingError as exc:
        raise SuiteError(f"{_at(where, exc.key)}: {exc.problem}") from None
    except SuiteError as exc:
        if str(exc).startswith(where):
            raise
        raise SuiteError(f"{where}: {exc}") from None


def read_named_yaml(name_or_path: str, registry: Registry[Path]) -> tuple[Any, Path]:
    """A YAML file given as a path, or by its name in ``registry``: (parsed content, path).

    Something that looks like a path (it holds a ``/`` or ends in ``.yaml`` / ``.yml``) is read
    as a file and must be one ("file not found", "is a directory"); a bare name is looked up in
    ``registry`` (an unknown name: the registry's near-miss hint).
    """
    path = Path(name_or_path).expanduser()
    kind = registry.kind
    if "/" in name_or_path or os.sep in name_or_path or path.suffix in (".yaml", ".yml"):
        if path.is_dir():
            raise SuiteError(f"{kind} {name_or_path}: is a directory, not a YAML file; name a file in it "
                             f"(e.g. {path / 'name.yaml'}) or a built-in {kind} ({', '.join(registry.names())})")
        if not path.is_file():
            raise SuiteError(f"{kind} {name_or_path}: file not found; check the path, or name a built-in {kind} "
                             f"({', '.join(registry.names())})")
    else:
        path = registry.get(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot be read ({exc.strerror or exc}); check the file's permissions") from None
    try:
        return yaml.safe_load(text), path
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
