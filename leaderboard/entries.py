"""Leaderboard entries: finished MLflow runs aggregated per (defense, dataset, backbone, profile).

One JSON file per entry, RobustBench style: the reproduced metrics as mean ± std over seeds (with
n and the per-seed values), the matching published values beside each (``leaderboard.compare``),
the attack variants and substitutions used, protocol and policy versions, MLflow run ids,
environment, git commits and the resolved config. Output is deterministic (sorted keys, stable
file names, no timestamps) so that re-collecting the same store gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from leaderboard.compare import Cell, PublishedLike, compare_cell, stock_counterpart
from leaderboard.tolerance import NO_PUBLISHED, STATUSES, Policy
from suite.core import records
from suite.core.errors import SuiteError
from suite.core.files import write_text_atomically
from suite.core.records import RunRecord  # re-exported: the leaderboard's view of one run

SCHEMA = "suite-leaderboard-entry/1"
# Run-level metrics -> leaderboard metric (eval attack "none").
RUN_METRICS = {records.CLEAN_ACCURACY: "clean", records.MEAN_EPOCH_TIME: "epoch_time",
               records.BEST_VALIDATION_ACCURACY: "best_validation"}
# Per-attack metric keys -> leaderboard metric. ``accuracy`` is what k-PGD (accuracy under the
# embedding-space attack) and AdvGLUE (accuracy on adversarial inputs) log: accuracy under attack.
ATTACK_METRICS = {"aua": "aua", "suc": "suc", "queries": "queries", "accuracy": "aua",
                  "cosine": "cosine", "euclidean": "euclidean",
                  records.KENDALL_TAU: records.KENDALL_TAU, records.TOPK_INTERSECTION: records.TOPK_INTERSECTION}
# Interpretation consistency (FLAT §5.2, suite.core.records.interpretation_metric): attack-run key ->
# (leaderboard metric, interpretation method). The published cells state their method (and k, and
# LIME's number of pairs) as settings, which the cell's must match (leaderboard.compare).
INTERPRETATION_METRICS = {records.interpretation_metric(key, method): (key, method)
                          for key in (records.KENDALL_TAU, records.TOPK_INTERSECTION)
                          for method in records.INTERPRETATION_SUFFIX}
# Metrics set beside published values; the others are recorded only.
COMPARED = ("clean", "epoch_time", "aua", "suc", "queries", "cosine", "euclidean",
            records.KENDALL_TAU, records.TOPK_INTERSECTION)
UNITS = {"clean": "%", "aua": "%", "suc": "%", "best_validation": "%", "queries": "queries", "epoch_time": "s",
         "attack_seconds": "s", "clean_attacked_set": "%"}
# Runs that predate the run record's training-attack tag: defense-config keys that name a discrete training attack
TRAIN_ATTACK_KEYS = ("train_attack", "attack")


# --- reading MLflow: one reader for `leaderboard collect` and `suite check` (suite.core.records) ----------

def read_runs(tracking_uri: str) -> list[RunRecord]:
    """Every FINISHED suite training run, with its attacks, in every active experiment of the store."""
    return records.read_runs(tracking_uri)


# --- aggregation ---------------------------------------------------------------------------------

def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


def aggregate(values: Sequence[tuple[int, float | None]], unit: str | None = None) -> dict[str, Any]:
    """Mean ± sample std (n - 1 in the denominator; None for one seed) over the seeds' values.

    NaN / missing values are kept in ``values`` as null and left out of mean, std and n.
    """
    per_seed = [{"seed": s, "value": _clean(v)} for s, v in sorted(values, key=lambda sv: sv[0])]
    present = [p["value"] for p in per_seed if p["value"] is not None]
    out: dict[str, Any] = {"n": len(present), "values": per_seed,
                           "mean": _clean(statistics.fmean(present)) if present else None,
                           "std": _clean(statistics.stdev(present)) if len(present) > 1 else None}
    if unit:
        out["unit"] = unit
    return out


def slug(name: str) -> str:
    """A file-name-safe, stable form of ``name``; names that had to change get a short hash suffix."""
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.") or "x"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def entry_id(defense: str, dataset: str, backbone: str, profile: str) -> str:
    return "__".join(slug(p) for p in (profile, dataset, backbone, defense))


def _train_attack(run: RunRecord, config: Mapping[str, Any]) -> str | None:
    """The defense's training attack as the run recorded it; for older runs, guessed from its config."""
    if run.records_train_attack:
        return run.train_attack
    defense_config = config.get("defense_config")
    for key in TRAIN_ATTACK_KEYS:
        value = defense_config.get(key) if isinstance(defense_config, Mapping) else config.get(f"defense_config.{key}")
        if value not in (None, "", "None"):
            return str(value)
    return None


def _fingerprint(run: RunRecord) -> str:
    config = {k: v for k, v in run.config.items() if k != "seed"}
    data = (run.job or {}).get("data_sha256", {})
    return json.dumps({"config": config, "data": data}, sort_keys=True, default=str)


def _differing_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys.extend(_differing_keys(va, vb, f"{prefix}{k}."))
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def select_runs(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """The runs an entry is made of, and the excluded ones with the reason.

    The entry's configuration is that of its most recent run; runs with another configuration (or
    other data digests) are excluded, and of several runs of one seed only the most recent counts.
    Runs of a profile changed with ``--set`` (``profile_overrides`` in their config) are excluded
    when the profile's own runs exist; an entry made only of such runs shows them in its config.
    """
    latest_first = sorted(runs, key=lambda r: (r.start_time, r.run_id), reverse=True)
    plain = [r for r in latest_first if not r.config.get("profile_overrides")]
    reference = (plain or latest_first)[0]  # a run of the profile as committed, if there is one
    fingerprint = _fingerprint(reference)
    kept: dict[int, RunRecord] = {}
    excluded = []
    for run in latest_first:
        if plain and run.config.get("profile_overrides"):
            changed = ", ".join(str(s) for s in run.config["profile_overrides"])
            excluded.append({"run_id": run.run_id, "seed": run.seed,
                             "reason": f"profile changed on the command line (--set {changed}): not a run of the profile"})
        elif _fingerprint(run) != fingerprint:
            ours = {k: v for k, v in reference.config.items() if k != "seed"}
            theirs = {k: v for k, v in run.config.items() if k != "seed"}
            keys = _differing_keys(ours, theirs) or ["data_sha256"]
            excluded.append({"run_id": run.run_id, "seed": run.seed,
                             "reason": f"configuration differs from the entry's latest run ({', '.join(keys[:5])})"})
        elif run.seed in kept:
            excluded.append({"run_id": run.run_id, "seed": run.seed,
                             "reason": f"superseded by the later run {kept[run.seed].run_id} of seed {run.seed}"})
        else:
            kept[run.seed] = run
    return [kept[s] for s in sorted(kept)], sorted(excluded, key=lambda e: (e["seed"], e["run_id"]))


def _substitutions(run: RunRecord) -> list[str]:
    if run.job and isinstance(run.job.get("substitutions"), list):
        return [str(s) for s in run.job["substitutions"]]
    return list(run.substitutions or ())


def _attack_settings(run: RunRecord, attack: str) -> dict[str, Any] | None:
    summary = run.attack_summaries.get(attack)
    if summary is None or not isinstance(summary.get("settings"), Mapping):
        return None
    settings = summary["settings"]
    out = dict(settings.get("settings") or {})
    for key in ("query_budget", "evaluation_set"):  # TextAttack's budget; AdvGLUE's adversarial set
        if key in settings:
            out[key] = settings[key]
    return out


def _metric_settings(key: str, settings: Mapping[str, Any] | None, runs: Sequence[RunRecord],
                     attack: str) -> Mapping[str, Any] | None:
    """The settings a metric was measured with: the attack's, plus for an interpretation metric its
    method, k (top-k) and LIME's number of pairs, from the runs' interpretation settings (None when
    the runs disagree on them)."""
    if key not in INTERPRETATION_METRICS or settings is None:
        return settings
    name, method = INTERPRETATION_METRICS[key]
    configs = [((r.attack_summaries.get(attack) or {}).get("settings") or {}).get("interpretation") for r in runs]
    if not configs or any(c != configs[0] or not isinstance(c, Mapping) for c in configs):
        return None
    extra: dict[str, Any] = {"interpretation": method}
    if name == records.TOPK_INTERSECTION:
        extra["k"] = configs[0].get("k")
    if method == "lime":
        extra["lime_pairs"] = configs[0].get("lime_pairs")
    return {**settings, **extra}


def _attack_info(runs: Sequence[RunRecord], attack: str) -> dict[str, Any]:
    having = [r for r in runs if r.attack_hash(attack) is not None]
    variants = sorted({r.attack_variant(attack) for r in having})
    hashes = sorted({r.attack_hash(attack) for r in having})
    settings = [_attack_settings(r, attack) for r in having]
    consistent = len(hashes) == 1 and all(s is not None and s == settings[0] for s in settings)
    compared_as, registered_variant, registered_subs = stock_counterpart(attack)
    substitutions = sorted({s for r in having for s in r.attack_substitutions(attack)}) or list(registered_subs)
    return {"variant": variants[0] if len(variants) == 1 else "mixed", "hashes": hashes,
            "compared_as": compared_as, "substitutions": substitutions,
            "settings": settings[0] if consistent else None, "runs": [r.run_id for r in having]}


def _with_published(stat: dict[str, Any], cell: Cell, published: Sequence[PublishedLike], policy: Policy,
                    summary: dict[str, int]) -> dict[str, Any]:
    rows = compare_cell(cell, stat["mean"], published, policy)
    stat["published"] = rows
    if not rows:
        stat["status"] = NO_PUBLISHED
        summary[NO_PUBLISHED] += 1
    for row in rows:
        summary[row["status"]] += 1
    return stat


def build_entry(runs: Sequence[RunRecord], published: Sequence[PublishedLike], policy: Policy) -> dict[str, Any]:
    """One leaderboard entry from the runs of one (defense, dataset, backbone, profile)."""
    if len({r.key for r in runs}) != 1:
        raise ValueError("build_entry needs the runs of exactly one (defense, dataset, backbone, profile)")
    defense, dataset, backbone, profile = runs[0].key
    kept, excluded = select_runs(runs)
    config = {k: v for k, v in kept[-1].config.items() if k != "seed"}
    profile_version = config.get("profile_version")
    profile_version = int(profile_version) if str(profile_version).isdigit() else None
    train_attack = _train_attack(kept[-1], config)
    summary = {s: 0 for s in STATUSES}
    base = dict(profile=profile, profile_version=profile_version, dataset=dataset, backbone=backbone,
                defense=defense, train_attack=train_attack)
    defense_config = config.get("defense_config")
    cell_base = dict(base, defense_config=defense_config if isinstance(defense_config, Mapping) else {})

    metrics = {}
    for key, name in RUN_METRICS.items():
        values = [(r.seed, r.metrics[key]) for r in kept if key in r.metrics]
        if values:
            stat = aggregate(values, UNITS.get(name))
            metrics[name] = (_with_published(stat, Cell(**cell_base, metric=name), published, policy, summary)
                             if name in COMPARED else stat)

    attacks = {}
    for attack in sorted({a for r in kept for a in r.attacks()}):
        info = _attack_info(kept, attack)
        per_run = [(r.seed, r.attack_metrics(attack)) for r in kept]
        keys = sorted({k for _, m in per_run for k in m})
        attack_metrics = {}
        for key in keys:
            name = ATTACK_METRICS.get(key, key)
            metric = INTERPRETATION_METRICS[key][0] if key in INTERPRETATION_METRICS else name
            stat = aggregate([(seed, m[key]) for seed, m in per_run if key in m], UNITS.get(name))
            if metric in COMPARED:
                cell = Cell(**cell_base, metric=metric, eval_attack=attack, compared_as=info["compared_as"],
                            attack_variant=info["variant"], attack_substitutions=tuple(info["substitutions"]),
                            attack_settings=_metric_settings(key, info["settings"], kept, attack))
                stat = _with_published(stat, cell, published, policy, summary)
            attack_metrics[name] = stat
        attacks[attack] = {**info, "metrics": attack_metrics}

    substitutions = sorted({s for r in kept for s in _substitutions(r)})
    return {
        "schema": SCHEMA, "id": entry_id(defense, dataset, backbone, profile),
        **base, "protocol_version": str(config.get("protocol_version", "unknown")),
        "config": config, "config_source": "job.json" if all(r.job for r in kept) else "params (job.json missing)",
        "data_sha256": (kept[-1].job or {}).get("data_sha256"),
        "substitutions": substitutions, "seeds": [r.seed for r in kept],
        "runs": [{"run_id": r.run_id, "seed": r.seed, "experiment": r.experiment,
                  "config_hash": r.config_hash, "git_commit": r.git_commit,
                  "device": r.device, "checkpoint_sha256": r.checkpoint_sha256,
                  "environment": r.environment} for r in kept],
        "excluded_runs": excluded,
        "git_commits": sorted({"unknown" if r.git_commit is None else r.git_commit for r in kept}),
        "metrics": metrics, "attacks": attacks, "tolerances": policy.record(), "summary": summary,
    }


def build_entries(runs: Iterable[RunRecord], published: Sequence[PublishedLike], policy: Policy) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return [build_entry(groups[k], published, policy) for k in sorted(groups)]


# --- files ---------------------------------------------------------------------------------------

def dumps(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# An entry id is a file name: slugs joined by "__" (entry_id); nothing that leaves the folder
ENTRY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def check_entry_id(entry: Mapping[str, Any], where: str) -> str:
    """``entry["id"]`` if it is a safe file name (:data:`ENTRY_ID`, no ``..``); else a one-line SuiteError."""
    value = entry.get("id") if isinstance(entry, Mapping) else None
    if not isinstance(value, str) or not ENTRY_ID.fullmatch(value) or ".." in value:
        raise SuiteError(f"{where}: entry id {value!r} is not a safe file name (letters, digits and . _ + -, "
                         "no path separators or '..'); re-collect the entry with 'suite leaderboard collect'")
    return value


def write_entries(entries: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """Write one ``<id>.json`` per entry into ``out``; returns the files written.

    Collect merges: entry files already in ``out`` that this collect did not produce are kept
    (they may come from another store); :func:`prune_entries` removes them. Every id is checked
    (:func:`check_entry_id`) before anything is written.
    """
    ids = [check_entry_id(entry, f"entry {entry.get('defense')}/{entry.get('dataset')}/{entry.get('backbone')}/"
                                 f"{entry.get('profile')}") for entry in entries]
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for entry, name in zip(entries, ids):
            path = out / f"{name}.json"
            write_text_atomically(path, dumps(entry))
            written.append(path)
    except OSError as exc:  # a full disk: the entries already there stay whole (each file is replaced at once)
        raise SuiteError(f"cannot write the leaderboard entries in {out} ({exc.strerror or exc}); "
                         f"{len(written)} of {len(entries)} written, the others unchanged; free disk space or "
                         "choose another --out and re-run 'suite leaderboard collect'") from None
    return written


def prune_entries(out: Path, keep: Sequence[Path]) -> list[Path]:
    """Remove the leaderboard entry files (:data:`SCHEMA`) in ``out`` that are not in ``keep``; returns them."""
    keep_set = {Path(p).resolve() for p in keep}
    removed = []
    for old in sorted(out.glob("*.json")):
        if old.resolve() not in keep_set and _is_entry(old):
            old.unlink()
            removed.append(old)
    return removed


def _is_entry(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def load_entries(folder: Path) -> list[dict[str, Any]]:
    """Every entry JSON under ``folder``, sorted by (dataset, profile, backbone, defense)."""
    if not folder.is_dir():
        raise SuiteError(f"entries folder {folder} not found; run 'suite leaderboard collect --out {folder}' first")
    entries = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SuiteError(f"{path}: not valid JSON ({exc}); re-run 'suite leaderboard collect'") from None
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            check_entry_id(data, str(path))  # the id names the site's files: never outside the output folder
            entries.append(data)
    if not entries:
        raise SuiteError(f"no leaderboard entries ({SCHEMA}) in {folder}; run 'suite leaderboard collect' first")
    return sorted(entries, key=lambda e: (e["dataset"], e["profile"], e["backbone"], e["defense"]))
