"""The leaderboard's comparison policy: tolerances, protocol matches and statuses.

The policy lives in one versioned file, ``leaderboard/tolerances.yaml``; every entry JSON records
the version it was judged with. A reproduced cell compared with a published value gets one of
four statuses:

* ``reproduced``: |reproduced mean - published| <= the metric's absolute tolerance;
* ``deviates``: outside it (the signed difference reproduced - published is shown);
* ``not comparable``: dataset / backbone / defense / attack / protocol differ (the reason is shown);
* ``no published value``: no paper reports the cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from suite.core.errors import SuiteError

DEFAULT_POLICY = Path(__file__).parent / "tolerances.yaml"

REPRODUCED = "reproduced"
DEVIATES = "deviates"
NOT_COMPARABLE = "not comparable"
NO_PUBLISHED = "no published value"
STATUSES = (REPRODUCED, DEVIATES, NOT_COMPARABLE, NO_PUBLISHED)

# Published values are printed to two decimals and means are floats: a difference that equals
# the tolerance up to float rounding (84.18 + 1.0 - 84.18 = 1.0000000000000142) is on the boundary.
_BOUNDARY_EPS = 1e-9

_KEYS = {"version", "provisional", "tolerances", "profiles", "not_compared", "never_comparable", "protocols",
         "backbone_stand_ins"}


@dataclass(frozen=True)
class ProtocolMatch:
    """A profile follows ``paper``'s protocol on these datasets with these backbones."""

    paper: str
    datasets: tuple[str, ...]
    backbones: tuple[str, ...]


@dataclass(frozen=True)
class ProfileProtocol:
    profile_versions: tuple[int, ...]
    follows: tuple[ProtocolMatch, ...]


@dataclass(frozen=True)
class Policy:
    """The parsed ``tolerances.yaml`` (see that file for the meaning of each section)."""

    version: int
    provisional: bool
    tolerances: dict[str, float]
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)
    not_compared: dict[str, str] = field(default_factory=dict)
    never_comparable: dict[str, str] = field(default_factory=dict)
    protocols: dict[str, ProfileProtocol] = field(default_factory=dict)
    backbone_stand_ins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    def tolerance(self, metric: str, profile: str) -> float | None:
        """Absolute tolerance of ``metric`` under ``profile`` (per-profile override first); None if unset."""
        override = self.profiles.get(profile, {})
        if metric in override:
            return override[metric]
        return self.tolerances.get(metric)

    def follows(self, profile: str, profile_version: int | None, paper: str, dataset: str, backbone: str) -> bool:
        """Whether ``profile`` (at ``profile_version``) runs ``paper``'s protocol for ``dataset`` / ``backbone``."""
        rule = self.protocols.get(profile)
        if rule is None or profile_version not in rule.profile_versions:
            return False
        return any(m.paper == paper and dataset in m.datasets and backbone in m.backbones for m in rule.follows)

    def record(self) -> dict[str, Any]:
        """What an entry JSON records about the policy it was judged with."""
        return {"version": self.version, "provisional": self.provisional}


def judge(reproduced: float, published: float, tolerance: float) -> tuple[str, float]:
    """(status, signed difference reproduced - published); the boundary |diff| == tol is reproduced."""
    diff = reproduced - published
    return (REPRODUCED if abs(diff) <= tolerance + _BOUNDARY_EPS else DEVIATES), diff


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SuiteError(f"{where}: a tolerance must be a non-negative number, got {value!r}")
    return float(value)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{where}: expected a list of names, got {value!r}")
    return tuple(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def parse_policy(raw: Any, where: str) -> Policy:
    raw = _mapping(raw, where)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown section(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    if not isinstance(raw.get("version"), int):
        raise SuiteError(f"{where}: 'version' must be an integer (bump it whenever a tolerance or rule changes)")
    tolerances = {k: _number(v, f"{where}: tolerances.{k}") for k, v in _mapping(raw.get("tolerances"), where).items()}
    profiles = {p: {k: _number(v, f"{where}: profiles.{p}.{k}") for k, v in _mapping(t, f"{where}: profiles.{p}").items()}
                for p, t in _mapping(raw.get("profiles"), f"{where}: profiles").items()}
    protocols = {}
    for profile, rule in _mapping(raw.get("protocols"), f"{where}: protocols").items():
        at = f"{where}: protocols.{profile}"
        rule = _mapping(rule, at)
        versions = rule.get("profile_versions")
        if not isinstance(versions, list) or not all(isinstance(v, int) for v in versions):
            raise SuiteError(f"{at}: profile_versions must list the profile versions the rule was checked for")
        follows = []
        for i, m in enumerate(rule.get("follows") or []):
            m = _mapping(m, f"{at}.follows[{i}]")
            if set(m) != {"paper", "datasets", "backbones"}:
                raise SuiteError(f"{at}.follows[{i}]: needs exactly paper, datasets, backbones")
            follows.append(ProtocolMatch(str(m["paper"]), _names(m["datasets"], f"{at}.follows[{i}].datasets"),
                                         _names(m["backbones"], f"{at}.follows[{i}].backbones")))
        protocols[profile] = ProfileProtocol(tuple(versions), tuple(follows))
    stand_ins = {b: _names(v, f"{where}: backbone_stand_ins.{b}")
                 for b, v in _mapping(raw.get("backbone_stand_ins"), f"{where}: backbone_stand_ins").items()}
    return Policy(
        version=raw["version"], provisional=bool(raw.get("provisional", False)), tolerances=tolerances,
        profiles=profiles,
        not_compared={k: str(v) for k, v in _mapping(raw.get("not_compared"), where).items()},
        never_comparable={k: str(v) for k, v in _mapping(raw.get("never_comparable"), where).items()},
        protocols=protocols, backbone_stand_ins=stand_ins, source=where,
    )


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate the comparison policy (default: the packaged ``tolerances.yaml``)."""
    path = Path(path) if path else DEFAULT_POLICY
    if not path.is_file():
        raise SuiteError(f"tolerance file {path} not found; pass --tolerances with an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    return parse_policy(raw, str(path))
