"""Typed configuration: profiles (versioned YAML), training settings and jobs.

A profile names the grid (datasets x backbones x defenses x seeds) and every setting a job
needs; ``Job.resolved()`` is the fully resolved configuration that is logged to MLflow and
hashed, so an identical finished job is found and skipped.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from suite.data.splits import SplitOptions
from suite.core.errors import SuiteError
from suite.core.registry import Registry
from suite.core.typed import at_least, from_mapping, merge_settings, read_named_yaml, require
from suite.run.overrides import Setting, apply_settings, as_setting, read_extended

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 2e-5
    optimizer: str = "adamw"  # adamw | adam
    weight_decay: float = 0.0
    schedule: str = "linear"  # linear (warm-up then linear decay) | constant
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int | None = None  # None: the backbone's default (FLAT Table 6 for word models)
    select: str = "best_validation"  # best_validation | last
    device: str = "auto"  # auto | cpu | cuda
    cpu_threads: int | None = None  # torch intra-op threads on CPU; results depend on it

    def __post_init__(self) -> None:
        at_least(self, 1, "epochs", "batch_size", "eval_batch_size", "max_length", "cpu_threads")
        at_least(self, 0, "weight_decay")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr!r}")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
                f"must be > 0 (or null: no clipping), got {self.max_grad_norm!r}")
        for key, allowed in (("optimizer", ("adamw", "adam")), ("schedule", ("linear", "constant")),
                             ("select", ("best_validation", "last")), ("device", ("auto", "cpu", "cuda"))):
            require(getattr(self, key) in allowed, key,
                    f"{getattr(self, key)!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ProtocolConfig:
    split_seed: int = 2024
    attack_set_seed: int = 2024
    attack_set_size: int = 1000

    def __post_init__(self) -> None:
        at_least(self, 0, "split_seed", "attack_set_seed")
        at_least(self, 1, "attack_set_size", hint=" (or omit it for the default, 1000; a dataset's "
                                                  "`attack_set: full` attacks its whole test split)")


@dataclass(frozen=True)
class Override:
    """Settings applied to the jobs whose dataset / backbone / defense match."""

    match: dict[str, str] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    defense: dict[str, Any] = field(default_factory=dict)

    def applies(self, dataset: str, backbone: str, defense: str) -> bool:
        here = {"dataset": dataset, "backbone": backbone, "defense": defense}
        return all(here.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True)
class GridBlock:
    """Cells a profile runs: datasets x backbones x defenses (an empty list: all of the profile's)."""

    datasets: tuple[str, ...] = ()
    backbones: tuple[str, ...] = ()
    defenses: tuple[str, ...] = ()

    def admits(self, dataset: str, backbone: str, defense: str, wildcard: Mapping[str, bool]) -> bool:
        here = {"datasets": dataset, "backbones": backbone, "defenses": defense}
        return all(wildcard.get(dim, False) or not getattr(self, dim) or value in getattr(self, dim)
                   for dim, value in here.items())


INTERPRETATION_METHODS = ("ig", "lime")


@dataclass(frozen=True)
class InterpretationConfig:
    """Interpretation consistency of the attacked pairs (FLAT §5.2; ``attacks.interpretation``),
    computed after each attack from its records and the trained model: off unless ``methods``
    lists ``ig`` (integrated gradients, every pair) and/or ``lime`` (on ``lime_pairs`` random pairs,
    ``lime_samples`` perturbations each). Not part of any hash of the trained model or the
    attack's records; recorded with each attack's child run."""

    methods: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()  # the attacks to evaluate; empty: every TextAttack-kind attack
    k: int = 5  # top-k intersection's k (FLAT Table 3); k = 1..10 are logged too (FLAT Fig. 6)
    ig_steps: int = 50  # integration steps (captum's default)
    lime_pairs: int = 1000  # FLAT §5.2: "we randomly pick up 1000 example pairs"
    lime_samples: int = 5000  # perturbed texts per explanation (LIME's default)

    def __post_init__(self) -> None:
        at_least(self, 1, "k", "ig_steps", "lime_pairs", "lime_samples")
        unknown = [m for m in self.methods if m not in INTERPRETATION_METHODS]
        require(not unknown, "methods", f"{', '.join(map(repr, unknown))} not one of {', '.join(INTERPRETATION_METHODS)}")

    @property
    def enabled(self) -> bool:
        return bool(self.methods)

    def applies(self, attack: str) -> bool:
        return self.enabled and (not self.attacks or attack in self.attacks)


@dataclass(frozen=True)
class Profile:
    name: str
    version: int
    description: str
    seeds: tuple[int, ...]
    protocol: ProtocolConfig
    datasets: dict[str, dict[str, Any]]
    backbones: dict[str, dict[str, Any]]
    defenses: dict[str, dict[str, Any]]
    attacks: tuple[str, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    # Optional: the profile runs only the cells of these blocks, not the full product
    grid: tuple[GridBlock, ...] = ()
    interpretation: InterpretationConfig = field(default_factory=InterpretationConfig)
    source: str = ""

    def __post_init__(self) -> None:
        at_least(self, 1, "version")
        require(bool(self.seeds), "seeds", "must list at least one seed, e.g. [0]")
        require(all(0 <= s < 2**32 for s in self.seeds), "seeds",
                f"each seed must be >= 0 and < 2**32, got {list(self.seeds)}")


PROFILES: Registry[Path] = Registry("profile")
for _path in sorted(PROFILE_DIR.glob("*.yaml")):
    PROFILES.register(_path.stem)(_path)


OVERRIDE_MATCH = ("dataset", "backbone", "defense")


def _listed(raw: dict[str, Any], key: str, where: str, what: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SuiteError(f"{where}: {key}: must be a list of {what}, got {value!r}")
    return value


def load_profile(name_or_path: str, settings: Sequence[Setting | str] = ()) -> Profile:
    """Read and validate a profile: every key, type, range and name, before any job runs.

    Each cell's settings are built as ``suite.run.runner.expand_jobs`` builds them (split
    options per dataset, training settings per backbone, each defense's Config, the overrides),
    so ``suite run --dry-run`` catches every bad value in one line naming the file and the key.

    A profile that ``extends:`` another is merged with it first, and ``settings`` (``--set
    KEY=VALUE``, :mod:`suite.run.overrides`) are applied to the raw mapping before it is validated:
    an error a setting causes names that ``--set`` as the place, one the file has names the file.
    """
    raw, path, parents = read_extended(name_or_path, PROFILES)
    where = str(path) + (f" (extends {', '.join(parents)})" if parents else "")
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a profile must be a YAML mapping")
    chosen = [as_setting(s) for s in settings]
    if not chosen:
        return _validated(raw, where)
    try:
        return _validated(apply_settings(raw, chosen), where)
    except SuiteError as exc:
        error = exc
    _validated(raw, where)  # the profile's own error first: it names the file
    for k in range(1, len(chosen) + 1):  # else the first --set that makes it fail
        _validated(apply_settings(raw, chosen[:k]), chosen[k - 1].option)
    raise error


def _validated(raw: dict[str, Any], where: str) -> Profile:
    """The profile of the raw mapping ``raw`` (``where``: the place errors name), validated."""
    raw = dict(raw)
    raw["protocol"] = from_mapping(ProtocolConfig, raw.get("protocol"), f"{where}: protocol")
    raw["interpretation"] = from_mapping(InterpretationConfig, raw.get("interpretation"), f"{where}: interpretation")
    raw.setdefault("seeds", (0,))
    if raw.get("attacks", ()) is None:  # `attacks:` with nothing after it: none
        raw["attacks"] = ()
    raw["overrides"] = tuple(from_mapping(Override, o, f"{where}: overrides[{i}]")
                             for i, o in enumerate(_listed(raw, "overrides", where, "overrides (match, train, ...)")))
    raw["grid"] = tuple(from_mapping(GridBlock, b, f"{where}: grid[{i}]")
                        for i, b in enumerate(_listed(raw, "grid", where, "blocks (datasets, backbones, defenses)")))
    for key in ("datasets", "backbones", "defenses"):
        value = raw.get(key)
        if value is None:
            raw[key] = {}
        elif isinstance(value, Mapping):  # a name without settings (`finetune:`) has none
            raw[key] = {k: {} if v is None else (dict(v) if isinstance(v, Mapping) else v) for k, v in value.items()}
    raw.setdefault("source", where)
    profile = from_mapping(Profile, raw, where)
    for block in profile.grid:
        for dim in ("datasets", "backbones", "defenses"):
            unknown = [n for n in getattr(block, dim) if n not in getattr(profile, dim)]
            if unknown:
                raise SuiteError(f"{where}: grid lists {dim} {', '.join(unknown)} that the profile does not configure; "
                                 f"add them under '{dim}:'")
    check_profile(profile)
    return profile


def check_profile(profile: Profile) -> None:
    """Every name the profile uses is registered, every cell's settings build (SuiteError, one line)."""
    from attacks import ATTACKS
    from defenses import DEFENSES
    from suite.data import DATASETS
    from suite.models import BACKBONES

    where = profile.source
    registries = {"dataset": DATASETS, "backbone": BACKBONES, "defense": DEFENSES}
    for kind, registry in registries.items():
        for name in getattr(profile, f"{kind}s"):
            if name not in registry:
                raise SuiteError(f"{where}: {kind}s: {registry.unknown_message(name)}")
    for name in profile.attacks:
        if name not in ATTACKS:
            raise SuiteError(f"{where}: attacks: {ATTACKS.unknown_message(name)}")
    train = from_mapping(TrainConfig, profile.train, f"{where}: train")
    for name, settings in profile.datasets.items():
        if "split_seed" in settings:
            raise SuiteError(f"{where}: datasets.{name}: split_seed is set once for all datasets, "
                             "under protocol.split_seed")
        from_mapping(SplitOptions, {**settings, "split_seed": profile.protocol.split_seed}, f"{where}: datasets.{name}")
    for name, settings in profile.backbones.items():
        settings = dict(settings)
        options = settings.pop("options", None)
        if options is not None and not isinstance(options, Mapping):
            raise SuiteError(f"{where}: backbones.{name}.options: must be a mapping of the backbone's "
                             f"constructor options, got {options!r}")
        from_mapping(TrainConfig, {**profile.train, **settings}, f"{where}: backbones.{name}")
    for name, settings in profile.defenses.items():
        from_mapping(DEFENSES.get(name).Config, settings, f"{where}: defenses.{name}")
    for i, override in enumerate(profile.overrides):
        at = f"{where}: overrides[{i}]"
        for key, value in override.match.items():
            if key not in OVERRIDE_MATCH:
                raise SuiteError(f"{at}.match: unknown key '{key}'; match on {', '.join(OVERRIDE_MATCH)}")
            if value not in registries[key]:
                raise SuiteError(f"{at}.match: {registries[key].unknown_message(value)}")
        from_mapping(TrainConfig, {**dataclasses.asdict(train), **override.train}, f"{at}.train")
        defenses = [override.match["defense"]] if "defense" in override.match else list(profile.defenses)
        for name in defenses if override.defense else ():
            merged = merge_settings(profile.defenses.get(name, {}), override.defense)
            from_mapping(DEFENSES.get(name).Config, merged, f"{at}.defense ({name})")


PROTOCOL_VERSION = "1"
BUILTIN_DEFENSES = "defenses"  # the package of the suite's own defenses


@lru_cache(maxsize=None)
def _distribution_of(top_level: str) -> str | None:
    names = importlib.metadata.packages_distributions().get(top_level) or []
    if not names:
        return None
    return f"{names[0]}=={importlib.metadata.version(names[0])}"


def defense_provenance(defense_cls: type) -> dict[str, Any]:
    """What identifies a defense's code in a job: its class ``version`` and, for a plugin, its package.

    A built-in defense (a module of the ``defenses`` package) is identified by its ``version``
    alone (the suite's own code is pinned by the run's git commit). A plugin's class is defined
    elsewhere: its installed distribution's name and version (``importlib.metadata``) go into the
    config hash too, so upgrading the plugin trains again; a class from a module that no installed
    distribution provides is recorded by its top-level module name.
    """
    out: dict[str, Any] = {"defense_version": int(getattr(defense_cls, "version", 1))}
    top = defense_cls.__module__.split(".", 1)[0]
    if top != BUILTIN_DEFENSES:
        out["defense_package"] = _distribution_of(top) or f"{top} (no installed distribution)"
    return out


@dataclass(frozen=True)
class Job:
    """One (defense, dataset, backbone, seed) cell of a profile, fully resolved."""

    profile: str
    profile_version: int
    dataset: str
    split: SplitOptions
    backbone: str
    train: TrainConfig
    backbone_options: dict[str, Any]
    defense: str
    defense_config: dict[str, Any]
    seed: int
    protocol: ProtocolConfig
    attacks: tuple[str, ...] = ()
    defense_version: int = 1  # the defense class's ``version`` (see defense_provenance)
    defense_package: str | None = None  # a plugin defense's "<distribution>==<version>"; None: built in
    # the --set KEY=VALUE settings that change this job (suite.run.overrides.attribute_settings)
    profile_overrides: tuple[str, ...] = ()
    # attack-stage settings, not part of the resolved config (the trained model is the same)
    interpretation: InterpretationConfig = field(default_factory=InterpretationConfig)

    @property
    def label(self) -> str:
        return f"{self.defense}/{self.dataset}/{self.backbone}/seed{self.seed}"

    def resolved(self) -> dict[str, Any]:
        """The job's full configuration: logged as params and job.json, and hashed (``config_hash``)."""
        out = {
            "protocol_version": PROTOCOL_VERSION,
            "profile": self.profile, "profile_version": self.profile_version,
            "dataset": self.dataset, "split": self.split.to_dict(),
            "backbone": self.backbone, "backbone_options": self.backbone_options,
            "train": dataclasses.asdict(self.train),
            "defense": self.defense, "defense_version": self.defense_version, "defense_config": self.defense_config,
            "seed": self.seed, "protocol": dataclasses.asdict(self.protocol),
        }
        if self.defense_package:
            out["defense_package"] = self.defense_package
        if self.profile_overrides:  # the profile, changed on the command line: its own hash and record
            out["profile_overrides"] = list(self.profile_overrides)
        return out

    @property
    def attack_set_size(self) -> int | None:
        """Examples to attack: the protocol's size, or None for the full test split."""
        if self.split.attack_set == "full":
            return None
        return self.split.attack_set_size or self.protocol.attack_set_size

    def config_hash(self, data_digests: Mapping[str, str] | None = None) -> str:
        """sha256 of the resolved config (and the data files' digests): the trained model's identity.

        The resolved config carries the protocol version and the defense's ``version`` (and a
        plugin defense's package), so a change to a defense's training numbers trains again.

        Attack-stage settings (attacks, attack-set seed and size) are not part of it: the trained
        model is the same whatever it is attacked with; each attack has its own hash.
        """
        config = self.resolved()
        config["protocol"] = {k: v for k, v in config["protocol"].items() if not k.startswith("attack_set")}
        config["split"] = {k: v for k, v in config["split"].items() if not k.startswith("attack_set")}
        payload = {"config": config, "data": dict(sorted((data_digests or {}).items()))}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
