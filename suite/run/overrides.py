"""Changing a profile without editing it: ``--set KEY=VALUE`` and profiles that ``extends:`` another.

Both work on the raw YAML mapping before it is validated (after lm-evaluation-harness, which
merges a task's YAML with the one it includes and with the command line), so every type, range
and did-you-mean check of :func:`suite.run.config.load_profile` applies to the result.

* ``--set defenses.adv-aug.rounds=2``: a dotted path into the profile mapping, spelled as the YAML
  spells it (``defenses.<name>.<field>[.<nested field>]``, ``backbones.<name>.<field>``,
  ``datasets.<name>.<field>``, ``train.<field>``, ``protocol.<field>``, ``interpretation.<field>``,
  ``seeds``, ``attacks``; a number indexes a list: ``overrides.0.train.epochs``). The value is read
  with ``yaml.safe_load`` (``2``, ``0.1``, ``true``, ``null``, ``[0, 1]``, ``pwws``) and replaces what
  is at the path; missing mappings on the way are created, so a registered defense (dataset,
  backbone) the profile does not list is added with that setting.
* ``extends: smoke`` (a registered profile, or a YAML path relative to the extending file): the
  parent's mapping deep-merged with the child's (mappings merge key by key, lists and scalars, null
  included, replace), then validated as one profile. The child needs its own ``name`` and
  ``version``; its ``description`` defaults to the parent's, prefixed ``extends <parent>:``.

A job that a ``--set`` changes records it in its resolved config (``profile_overrides``, see
:func:`attribute_settings`), so it has its own config hash and is never taken for the profile's run.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from suite.core.errors import SuiteError
from suite.core.registry import Registry
from suite.core.typed import merge_settings, read_named_yaml

if TYPE_CHECKING:
    from suite.run.config import Job

NOT_SETTABLE = {"source": "source is not a profile setting (it is where the profile was read from)",
                "extends": "extends cannot be set on the command line; write a profile file with "
                           "`extends: <profile>` and the settings to change"}


def flow(value: Any) -> str:
    """``value`` as one line of YAML that reads back the same (JSON, except a plain string as is)."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value and value.strip() == value and value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


@dataclass(frozen=True)
class Setting:
    """One ``--set KEY=VALUE``: the dotted path into the profile mapping and the YAML value."""

    path: tuple[str, ...]
    value: Any
    text: str  # as given on the command line

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def option(self) -> str:
        """Where the setting comes from, for error lines: ``--set <KEY=VALUE>``."""
        return f"--set {self.text}"

    @property
    def canonical(self) -> str:
        """``KEY=VALUE`` with the value written back (``rounds= 02`` and ``rounds=2`` read the same)."""
        return f"{self.key}={flow(self.value)}"


def parse_setting(text: str) -> Setting:
    """``KEY=VALUE`` as a :class:`Setting`, else a one-line SuiteError saying what to write."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise SuiteError(f"expected KEY=VALUE (a dotted path into the profile, e.g. defenses.adv-aug.rounds=2), "
                         f"got {text!r}")
    path = tuple(part.strip() for part in key.split("."))
    if not all(path):
        raise SuiteError(f"{text!r}: the key {key!r} has an empty part; write dotted names, e.g. train.epochs=1")
    if path[0] in NOT_SETTABLE:
        raise SuiteError(f"{text!r}: {NOT_SETTABLE[path[0]]}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise SuiteError(f"{text!r}: the value {value!r} is not valid YAML ({first}); quote a string "
                         "that YAML would misread") from None
    return Setting(path, parsed, text)


def as_setting(item: Setting | str) -> Setting:
    return item if isinstance(item, Setting) else parse_setting(item)


def _index(node: list[Any], part: str, where: str, setting: Setting) -> int:
    """``part`` as an index of the list ``node`` (at ``where``), else one line with the valid indices."""
    if not part.isdigit() or int(part) >= len(node):
        entries = f"{len(node)} entr{'y' if len(node) == 1 else 'ies'}"
        span = f"index 0..{len(node) - 1}" if node else "it is empty"
        raise SuiteError(f"{setting.option}: {where} is a list of {entries} ({span}); index it with a number "
                         f"or set it whole (--set {where}=[...])")
    return int(part)


def apply_settings(raw: Mapping[str, Any], settings: Sequence[Setting]) -> dict[str, Any]:
    """A copy of the profile mapping ``raw`` with each setting applied in order (the last one wins).

    A missing (or null) mapping on the way is created (``defenses.pgd.perturbation.steps=3`` under
    ``pgd: {}``); a path through a value that is not a mapping or list is a one-line error.
    """
    out = copy.deepcopy(dict(raw))
    for setting in settings:
        node: Any = out
        for depth, part in enumerate(setting.path):
            here = ".".join(setting.path[:depth + 1])
            last = depth == len(setting.path) - 1
            if isinstance(node, list):
                index = _index(node, part, ".".join(setting.path[:depth]), setting)
                if last:
                    node[index] = setting.value
                    break
                child = node[index]
            else:
                if last:
                    node[part] = setting.value
                    break
                child = node.get(part)
                if child is None:  # `finetune:` (no settings) or not there yet
                    child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise SuiteError(f"{setting.option}: {here} is {flow(child)}, not a mapping of settings; "
                                 f"set it whole (--set {here}=...)")
            node = child
    return out


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or Path(ref).suffix in (".yaml", ".yml")


def read_extended(name_or_path: str, registry: Registry[Path]) -> tuple[Any, Path, tuple[str, ...]]:
    """A profile's raw mapping with its ``extends:`` chain merged in: (mapping, path, parents named).

    Cycles, a parent that is not a mapping and a child without its own ``name`` / ``version`` (or
    with the name of a registered profile other than itself) are one-line errors naming the file.
    """
    raw, path = read_named_yaml(name_or_path, registry)
    return _extend(raw, path, registry, ())


def _extend(raw: Any, path: Path, registry: Registry[Path],
            chain: tuple[Path, ...]) -> tuple[Any, Path, tuple[str, ...]]:
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw, path, ()
    where, ref = str(path), raw["extends"]
    here = path.resolve()
    if not isinstance(ref, str) or not ref.strip():
        raise SuiteError(f"{where}: extends: must name one profile (a registered name, e.g. smoke, or a YAML "
                         f"path relative to this file), got {ref!r}")
    for key in ("name", "version"):
        if key not in raw:
            raise SuiteError(f"{where}: a profile that extends {ref} needs its own {key} (runs are recorded "
                             "under the profile's name and version)")
    target = str(path.parent / Path(ref).expanduser()) if _looks_like_path(ref) else ref
    try:
        parent, parent_path = read_named_yaml(target, registry)
    except SuiteError as exc:
        raise SuiteError(f"{where}: extends: {exc}") from None
    seen = (*chain, here)
    if parent_path.resolve() in seen:
        loop = seen[seen.index(parent_path.resolve()):]
        names = " -> ".join(str(p) for p in (*loop, parent_path.resolve()))
        raise SuiteError(f"{where}: extends: {ref} makes a cycle ({names}); a profile cannot extend itself")
    parent, parent_path, grand = _extend(parent, parent_path, registry, seen)
    if not isinstance(parent, dict):
        raise SuiteError(f"{parent_path}: a profile must be a YAML mapping (it is extended by {where})")
    name = raw["name"]
    if name == parent.get("name"):
        raise SuiteError(f"{where}: name: {name!r} is the name of the profile it extends ({ref}); give it "
                         "its own name, so that its runs are not taken for that profile's")
    if isinstance(name, str) and name in registry and registry.get(name).resolve() != here:
        raise SuiteError(f"{where}: name: {name!r} is the registered profile {registry.get(name)}; give this "
                         "profile its own name")
    child = {k: v for k, v in raw.items() if k != "extends"}
    merged = merge_settings(parent, child)
    if "description" not in child:
        merged["description"] = f"extends {ref}: {parent.get('description', '')}".rstrip(": ")
    return merged, path, (ref, *grand)


# --- which jobs a --set changes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """The cells picked on the command line (None: the profile's), as ``expand_jobs`` takes them."""

    defenses: Sequence[str] | None = None
    datasets: Sequence[str] | None = None
    backbones: Sequence[str] | None = None
    seeds: Sequence[int] | None = None


Cell = tuple[str, str, str, int]


def _cell(job: "Job") -> Cell:
    return job.defense, job.dataset, job.backbone, job.seed


def _expanded(name_or_path: str, settings: Sequence[Setting], jobs: Sequence["Job"],
              selection: Selection) -> tuple[dict[Cell, dict[str, Any]], set[Cell]] | None:
    """Under the profile with ``settings``: the resolved configs of ``jobs``' cells, and the cells the
    command line selects (None: the profile does not load, or the selection matches nothing)."""
    from suite.run.config import load_profile
    from suite.run.runner import expand_jobs

    try:
        profile = load_profile(name_or_path, settings)
        same_cells = expand_jobs(profile, defenses=sorted({j.defense for j in jobs}),
                                 datasets=sorted({j.dataset for j in jobs}),
                                 backbones=sorted({j.backbone for j in jobs}), seeds=sorted({j.seed for j in jobs}))
        selected = expand_jobs(profile, **dataclasses.asdict(selection))
    except SuiteError:
        return None
    return {_cell(j): j.resolved() for j in same_cells}, {_cell(j) for j in selected}


def attribute_settings(name_or_path: str, settings: Sequence[Setting | str], jobs: Sequence["Job"],
                       selection: Selection = Selection()) -> tuple[list["Job"], list[Setting]]:
    """Mark each of ``jobs`` (expanded from the profile with ``settings``) with the settings that change it.

    A setting changes a job when the job's resolved config differs without it (the same cell of the
    profile with the other settings; where the settings only change it together, all of them). The
    marked job's ``profile_overrides`` (``KEY=VALUE``, canonical) go into its resolved config, hence
    its config hash and run record; a job no setting changes is the profile's own job, hash and all
    (``--set seeds=[0, 5]``: seed 5 is the job ``--seed 5`` runs). Returns the marked jobs and the
    settings that change neither a job nor which cells ``selection`` picks (worth a note: e.g.
    ``train.epochs`` under a backbone that sets its own epochs).
    """
    settings = [as_setting(s) for s in settings]
    if not settings or not jobs:
        return list(jobs), list(settings)
    cells = {_cell(j) for j in jobs}
    without = [_expanded(name_or_path, settings[:i] + settings[i + 1:], jobs, selection)
               for i in range(len(settings))]
    plain = without[0] if len(settings) == 1 else _expanded(name_or_path, (), jobs, selection)
    used = {i for i, other in enumerate(without) if other is None or other[1] != cells}
    marked = []
    for job in jobs:
        mine = job.resolved()
        changed = [i for i, other in enumerate(without) if other is None or other[0].get(_cell(job)) != mine]
        if not changed and (plain is None or plain[0].get(_cell(job)) != mine):
            changed = list(range(len(settings)))
        used.update(changed)
        overrides = tuple(settings[i].canonical for i in changed)
        marked.append(dataclasses.replace(job, profile_overrides=overrides) if overrides else job)
    return marked, [s for i, s in enumerate(settings) if i not in used]


def non_default_settings(defense: str, config: Mapping[str, Any]) -> str:
    """A defense config's settings that differ from its Config defaults, as ``key=value`` (dotted
    for nested settings: ``perturbation.steps=2``); ``defaults`` when there are none."""
    from defenses import DEFENSES

    defaults = dataclasses.asdict(DEFENSES.get(defense).Config())
    return " ".join(_differences(config, defaults, "")) or "defaults"


def _differences(config: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str) -> list[str]:
    out = []
    for key, value in config.items():
        default = defaults.get(key)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            out.extend(_differences(value, default, f"{prefix}{key}."))
        elif value != default:
            out.append(f"{prefix}{key}={flow(list(value) if isinstance(value, tuple) else value)}")
    return out
