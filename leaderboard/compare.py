"""Which published values a reproduced cell is compared with, and the status of each comparison.

A reproduced cell (profile, dataset, backbone, defense, train attack, eval attack, metric) is set
beside every published value (leaderboard/published/*.yaml) of the same dataset, defense, eval
attack and metric, reported for the cell's backbone or a backbone it stands in for. Each pairing
is *compared* (reproduced / deviates, see ``leaderboard.tolerance``) only if all hold:

1. the profile is not a regression-only profile (smoke);
2. the backbone is the paper's (MiniLM-L6 beside BERT-base is shown, never judged);
3. the defense was trained against the same discrete attack as in the paper (FLAT (PWWS) is not
   FLAT (TextFooler));
4. the eval attack ran as the stock recipe (an ``offline`` variant is a different attack);
5. the profile follows the paper's protocol for the dataset (``protocols`` in tolerances.yaml);
6. the metric is judged at all (epoch time is hardware-bound) and has a tolerance;
7. the settings the paper states for the number (query budget, k-PGD epsilon, a defense's
   ablation setting, ...) are the ones used here.

Substitutions (GloVe 50d for word2vec, ...) do not block a comparison: they travel with it.
Otherwise the pairing is ``not comparable`` with the first failing rule as its reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from attacks import ATTACKS
from leaderboard.published import PublishedResult
from leaderboard.tolerance import NOT_COMPARABLE, Policy, judge


# The fields comparisons read are those of the published registry's records.
PublishedLike = PublishedResult


@dataclass(frozen=True)
class Cell:
    """One reproduced number's identity.

    ``eval_attack`` is the attack as run ("none" for clean metrics); ``compared_as`` is the name
    published values use for it (the stock recipe an offline variant derives from).
    ``attack_settings`` are the settings it ran with (query budget, epsilon, ...), ``None`` when
    the runs of the cell disagree on them; ``defense_config`` is the defense's resolved config.
    """

    profile: str
    profile_version: int | None
    dataset: str
    backbone: str
    defense: str
    train_attack: str | None
    metric: str
    eval_attack: str = "none"
    compared_as: str = "none"
    attack_variant: str = "stock"
    attack_substitutions: tuple[str, ...] = ()
    attack_settings: Mapping[str, Any] | None = field(default_factory=dict)
    defense_config: Mapping[str, Any] = field(default_factory=dict)


def stock_counterpart(attack: str) -> tuple[str, str, tuple[str, ...]]:
    """(published name, variant, substitutions) of a registered attack; unregistered: (attack, "stock", ())."""
    if attack == "none" or attack not in ATTACKS:
        return attack, "stock", ()
    spec = ATTACKS.get(attack)
    if spec.variant == "stock":
        return attack, "stock", tuple(spec.substitutions)
    stock = [n for n, s in ATTACKS.items() if s.recipe == spec.recipe and s.kind == spec.kind and s.variant == "stock"]
    return (stock[0] if stock else attack), spec.variant, tuple(spec.substitutions)


def candidates(cell: Cell, published: Iterable[PublishedLike], policy: Policy) -> list[PublishedLike]:
    """Published values to set beside ``cell``: same dataset, defense, eval attack and metric,
    reported for the cell's backbone or one it stands in for; sorted for stable output."""
    backbones = {cell.backbone, *policy.backbone_stand_ins.get(cell.backbone, ())}
    found = [p for p in published
             if p.dataset == cell.dataset and p.defense == cell.defense and p.metric == cell.metric
             and p.eval_attack == cell.compared_as and p.backbone in backbones]
    return sorted(found, key=lambda p: (p.paper, p.table, p.backbone != cell.backbone, p.backbone,
                                        p.train_attack or "", p.value_text, p.value))


def _fmt(value: Any) -> str:
    return "none" if value in (None, "unlimited") else str(value)


def _settings_mismatch(cell: Cell, record: PublishedLike) -> str | None:
    """Why the settings the paper states for the cell differ from, or cannot be checked against,
    the ones used here (None: they agree).

    A stated setting is looked up in the attack's settings (query budget, k-PGD epsilon, AdvGLUE
    evaluation set), then in the defense config (e.g. FLAT's beta / gamma ablations); one found in
    neither cannot be verified, so the value is not compared. An attack run with a query budget is
    compared only with values stated for the same budget.
    """
    theirs = dict(record.settings or {})
    ours: dict[str, Any] = {}
    if cell.eval_attack != "none":
        if cell.attack_settings is None:
            return f"{cell.eval_attack} ran with different settings across the seeds of this cell"
        ours = dict(cell.attack_settings)
        budget_here = ours.get("query_budget", "unlimited")
        if "query_budget" in theirs or budget_here not in (None, "unlimited"):
            if _fmt(theirs.get("query_budget")) != _fmt(budget_here):
                return f"query budget {_fmt(theirs.get('query_budget'))} in the paper, {_fmt(budget_here)} here"
    for key in sorted(set(theirs) - {"query_budget"}):
        if key in ours:
            if str(theirs[key]) != str(ours[key]):
                return f"{cell.eval_attack} {key} {theirs[key]} in the paper, {ours[key]} here"
        elif key in cell.defense_config:
            if str(theirs[key]) != str(cell.defense_config[key]):
                return f"{cell.defense} {key} {theirs[key]} in the paper, {cell.defense_config[key]} here"
        else:
            return f"paper setting {key}={theirs[key]} is not recorded for this run"
    return None


def reason_not_comparable(cell: Cell, record: PublishedLike, policy: Policy) -> str | None:
    """The first comparability rule (module docstring) that ``record`` fails for ``cell``; None if none."""
    if cell.profile in policy.never_comparable:
        return policy.never_comparable[cell.profile]
    if record.backbone != cell.backbone:
        return f"backbone {cell.backbone} vs {record.backbone} in the paper"
    if (record.train_attack or None) != (cell.train_attack or None):
        return (f"trained against {record.train_attack or 'no discrete attack'} in the paper, "
                f"{cell.train_attack or 'no discrete attack'} here")
    if cell.attack_variant != "stock":
        what = "; ".join(cell.attack_substitutions) or "declared substitutes"
        return f"{cell.compared_as} {cell.attack_variant} variant ({cell.eval_attack}: {what})"
    if not policy.follows(cell.profile, cell.profile_version, record.paper, cell.dataset, cell.backbone):
        return (f"profile {cell.profile} v{cell.profile_version} is not declared to follow {record.paper}'s "
                f"protocol for {cell.dataset} / {cell.backbone}")
    if cell.metric in policy.not_compared:
        return policy.not_compared[cell.metric]
    if policy.tolerance(cell.metric, cell.profile) is None:
        return f"no tolerance for metric {cell.metric} in tolerances v{policy.version}"
    return _settings_mismatch(cell, record)


def compare(cell: Cell, reproduced: float | None, record: PublishedLike, policy: Policy) -> dict[str, Any]:
    """One published value beside the reproduced mean, with its status and reason / difference."""
    out: dict[str, Any] = {
        "paper": record.paper, "table": record.table, "backbone": record.backbone,
        "train_attack": record.train_attack, "eval_attack": record.eval_attack,
        "value": record.value, "value_text": record.value_text, "std": record.std,
        "unit": getattr(record, "unit", None),  # test doubles may omit it
        "flags": sorted(record.flags or []), "note": record.note,
        "settings": dict(record.settings) if record.settings else None,
        "status": NOT_COMPARABLE, "reason": None, "diff": None, "tolerance": None,
    }
    reason = reason_not_comparable(cell, record, policy)
    if reason is None and reproduced is None:
        reason = "no reproduced value (every seed's value is missing or NaN)"
    if reason is not None:
        out["reason"] = reason
        return out
    tol = policy.tolerance(cell.metric, cell.profile)
    assert tol is not None and reproduced is not None  # checked by reason_not_comparable
    status, diff = judge(reproduced, record.value, tol)
    out.update(status=status, diff=round(diff, 6), tolerance=tol)
    return out


def compare_cell(cell: Cell, reproduced: float | None, published: Iterable[PublishedLike],
                 policy: Policy) -> list[dict[str, Any]]:
    """Every published value listed beside ``cell``, each with its own status (an empty list is
    the status ``no published value``)."""
    return [compare(cell, reproduced, r, policy) for r in candidates(cell, published, policy)]
