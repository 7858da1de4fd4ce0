"""``suite check``: re-run (or reuse) selected jobs and fail when a reproduced number drifted.

A *check set* (``suite/checks/<name>.yaml``) lists items — a profile and a selection of its
cells (defenses, ``all`` for every registered one; datasets; backbones; seeds; attacks) — and
what each is compared with: ``published`` values (the leaderboard's rules and tolerances,
``leaderboard.compare`` / ``leaderboard/tolerances.yaml``) and/or the committed ``reference``
results (``suite/references/<profile>.json``, tolerances in the check set). Jobs go through
``suite.run.runner.run_job``: a finished identical job in the tracking store (same config hash) is
not trained again and finished attack examples come from the per-example cache.

Every comparison is printed (``leaderboard.check_report``); the exit code is 1 when a compared cell is
outside its tolerance or has no reference, 2 when a job could not run, else 0. A published value
the reproduction misses is never hidden: it fails unless the check set declares it a known
deviation, which is printed as such and fails again as soon as the reproduced value moves.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from leaderboard.check_report import (REFERENCE_METRICS, KnownDeviation, Reproduced, Row, dumps_reference,
                                load_reference, missing_reference_hint, published_rows, reference_diff,
                                reference_path, reference_row, render, run_key, summary, updated_reference)
from suite.run.config import from_mapping, read_named_yaml
from suite.core.errors import SuiteError
from suite.core.registry import Registry
from suite.run.fingerprint import describe, machine_fingerprint

log = logging.getLogger(__name__)

CHECK_DIR = Path(__file__).resolve().parents[1] / "checks"
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "references"
DEFAULT_SET = "ci"
AGAINST = ("published", "reference")

CHECK_SETS: Registry[Path] = Registry("check-set")  # the kind names the listing: 'suite list check-sets'
for _path in sorted(CHECK_DIR.glob("*.yaml")):
    CHECK_SETS.register(_path.stem)(_path)


@dataclass(frozen=True)
class CheckItem:
    """A profile and a selection of its cells; ``None`` selects the profile's own list."""

    name: str
    profile: str  # profile name, or a YAML path (relative to the check set's folder)
    defenses: tuple[str, ...] | None = None
    all_defenses: bool = False  # `defenses: all`: every registered defense, resolved at run time
    skip_defenses: dict[str, str] = field(default_factory=dict)  # name -> why it is not checked
    datasets: tuple[str, ...] | None = None
    backbones: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    attacks: tuple[str, ...] | None = None
    against: tuple[str, ...] = AGAINST
    # overrides of the set's cross_machine_tolerances for this item's cells (same units)
    cross_machine_tolerances: dict[str, float] = field(default_factory=dict)

    def defense_names(self) -> list[str] | None:
        if not self.all_defenses:
            return list(self.defenses) if self.defenses else None
        from defenses import DEFENSES

        return [n for n, cls in DEFENSES.items() if cls.name in ("", n) and n not in self.skip_defenses]


@dataclass(frozen=True)
class CheckSet:
    name: str
    version: int
    description: str
    reference_tolerances: dict[str, float]
    items: tuple[CheckItem, ...]
    cross_machine_tolerances: dict[str, float] = field(default_factory=dict)
    known_deviations: tuple[KnownDeviation, ...] = ()
    source: str = ""


def _parse_item(raw: Any, where: str, folder: Path) -> CheckItem:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: an item must be a mapping (name, profile, defenses, ...)")
    raw = dict(raw)
    if raw.get("defenses") == "all":
        raw["defenses"], raw["all_defenses"] = None, True
    elif "all_defenses" in raw:
        raise SuiteError(f"{where}: write `defenses: all`, not all_defenses")
    if isinstance(raw.get("against"), str):
        raw["against"] = [raw["against"]]
    raw["cross_machine_tolerances"] = _tolerances(raw.get("cross_machine_tolerances"),
                                                  f"{where}: cross_machine_tolerances")
    item = from_mapping(CheckItem, raw, where)
    bad = sorted(set(item.against) - set(AGAINST))
    if bad or not item.against:
        raise SuiteError(f"{where}: against must list one or both of {', '.join(AGAINST)}, got {list(item.against)}")
    profile = Path(item.profile)
    if profile.suffix in (".yaml", ".yml") and not profile.is_absolute():
        item = dataclasses.replace(item, profile=str(folder / profile))
    return item


def _tolerances(raw: Any, where: str) -> dict[str, float]:
    """A mapping metric -> non-negative number, every metric one the check compares."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: must be a mapping of metric -> tolerance ({', '.join(REFERENCE_METRICS)})")
    for metric, value in raw.items():
        if metric not in REFERENCE_METRICS:
            raise SuiteError(f"{where}.{metric}: not a compared metric ({', '.join(REFERENCE_METRICS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SuiteError(f"{where}.{metric} must be a non-negative number, got {value!r}")
    return {k: float(v) for k, v in raw.items()}


def parse_check_set(raw: Any, where: str, folder: Path) -> CheckSet:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a check set must be a YAML mapping")
    raw = dict(raw)
    raw["reference_tolerances"] = _tolerances(raw.get("reference_tolerances"), f"{where}: reference_tolerances")
    raw["cross_machine_tolerances"] = _tolerances(raw.get("cross_machine_tolerances"),
                                                  f"{where}: cross_machine_tolerances")
    items = raw.get("items")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{where}: items must be a non-empty list")
    raw["items"] = tuple(_parse_item(it, f"{where}: items[{i}]", folder) for i, it in enumerate(items))
    names = [it.name for it in raw["items"]]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}: item names must be unique, got {names}")
    deviations = []
    for i, dev in enumerate(raw.get("known_deviations") or []):
        at = f"{where}: known_deviations[{i}]"
        dev = from_mapping(KnownDeviation, dev, at)
        if len(dev.cell.split("/")) != 5:
            raise SuiteError(f"{at}: cell must read <profile>/<dataset>/<backbone>/<defense>/<metric>, "
                             f"got {dev.cell!r}")
        deviations.append(dataclasses.replace(dev, seeds=tuple(int(s) for s in dev.seeds),
                                              reproduced=float(dev.reproduced), difference=float(dev.difference)))
    raw["known_deviations"] = tuple(deviations)
    return from_mapping(CheckSet, {**raw, "source": where}, where)


def load_check_set(name_or_path: str) -> CheckSet:
    """A check set by name (``suite/checks/<name>.yaml``) or YAML path."""
    raw, path = read_named_yaml(name_or_path, CHECK_SETS)
    return parse_check_set(raw, str(path), path.parent)


# --- running -----------------------------------------------------------------------------------------

@dataclass
class ItemResult:
    item: CheckItem
    profile: str
    reproduced: list[Reproduced] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run key -> reference record
    errors: list[str] = field(default_factory=list)


def _finished_run(job: Any, tracker: Any, attacks: Sequence[str]) -> str:
    """--no-run: the finished run of ``job`` that already carries every attack."""
    from suite.data import load_protocol_splits
    from suite.run.runner import data_digests

    digest = job.config_hash(data_digests(load_protocol_splits(job.dataset, job.split)))
    run = tracker.find_finished(digest)
    if run is None:
        raise SuiteError(f"no finished run with config hash {digest} in {tracker.tracking_uri} "
                         f"(experiment {tracker.experiment}); run the check without --no-run")
    missing = [a for a in attacks if run.attack_hash(a) is None]
    if missing:
        raise SuiteError(f"run {run.run_id} was never attacked with {', '.join(missing)}; "
                         "run the check without --no-run")
    return run.run_id


def _record(client: Any, run_id: str, attacks: Sequence[str]) -> Any:
    """The leaderboard's view of one run (the reader of ``leaderboard collect``), restricted to its
    run-level metrics and ``attacks``; a missing artifact leaves a comparison "not comparable"."""
    from suite.core.records import read_run

    return read_run(client, run_id, attacks)


def _reference_run(record: Any, attacks: Sequence[str]) -> dict[str, Any]:
    """What a reference file keeps of one run: its values, what they are counted over, and the
    fingerprint of the machine that produced them (recorded by the run; the current machine's for a
    run that predates the record)."""
    from leaderboard.entries import ATTACK_METRICS

    metrics: dict[str, float] = {}
    counts: dict[str, float] = {}
    if record.clean_accuracy is not None:
        metrics["clean"] = record.clean_accuracy
        test_size = ((record.job or {}).get("data") or {}).get("sizes", {}).get("test")
        if test_size:
            counts["clean"] = int(test_size)
    for attack in attacks:
        values = record.attack_metrics(attack)
        for name, value in values.items():
            if ATTACK_METRICS.get(name) in REFERENCE_METRICS:
                metrics[f"{attack}.{ATTACK_METRICS[name]}"] = value
        n, correct = values.get("n"), values.get("clean_attacked_set")
        if n and not math.isnan(n):
            counts[f"{attack}.aua"] = int(n)
            if correct is not None and not math.isnan(correct):
                counts[f"{attack}.suc"] = int(round(n * correct / 100.0))  # attempted = not skipped
    fingerprint = (record.environment or {}).get("fingerprint") or machine_fingerprint()
    return {"config_hash": record.config_hash, "git_commit": record.git_commit,
            "profile_version": record.config.get("profile_version"), "fingerprint": fingerprint["id"],
            "fingerprint_details": dict(fingerprint), "counts": counts,
            "attacks": {a: h for a in attacks if (h := record.attack_hash(a))},
            "metrics": {k: v for k, v in metrics.items() if not math.isnan(v)}}


def run_item(item: CheckItem, tracking_uri: str | None, no_run: bool, published: Sequence[Any],
             policy: Any) -> ItemResult:
    """Run (or reuse) the item's jobs, then aggregate its cells with the leaderboard's code."""
    from attacks import ATTACKS
    from leaderboard.entries import build_entries

    from suite.run.config import load_profile
    from suite.run.runner import expand_jobs, run_job
    from suite.run.tracking import Tracker

    profile = load_profile(item.profile)
    attacks = list(item.attacks) if item.attacks is not None else list(profile.attacks)
    for name in attacks:
        ATTACKS.get(name)  # unknown attack: one line with a suggestion, before any training
    jobs = expand_jobs(profile, defenses=item.defense_names(), datasets=item.datasets, backbones=item.backbones,
                       seeds=item.seeds)
    result = ItemResult(item, profile.name)
    tracker = Tracker(tracking_uri, experiment=f"suite-{profile.name}")
    finished: list[tuple[str, list[str]]] = []
    for i, job in enumerate(jobs, 1):
        label = f"[{item.name} {i}/{len(jobs)}] {job.label}"
        print(label, file=sys.stderr, flush=True)
        try:
            if no_run:
                finished.append((_finished_run(job, tracker, attacks), list(attacks)))
                continue
            outcome = run_job(job, tracker, attacks=attacks)
        except Exception as exc:  # keep going: finished jobs stay in the store and are compared
            first = (str(exc).splitlines() or [""])[0]
            message = first if isinstance(exc, SuiteError) else f"{exc.__class__.__name__}: {first}"
            result.errors.append(f"{job.label}: {message}")
            print(f"suite: error: {job.label}: {message}", file=sys.stderr, flush=True)
            log.info("traceback of %s", job.label, exc_info=not isinstance(exc, SuiteError))
            continue
        failed = {e.split(":", 1)[0] for e in outcome.attack_errors}
        result.errors.extend(f"{job.label} attack {e}" for e in outcome.attack_errors)
        finished.append((outcome.run_id, [a for a in attacks if a not in failed]))
        reused = "reused finished run (config hash match)" if outcome.skipped else "trained"
        print(f"{label}: {reused}; run {outcome.run_id}", file=sys.stderr, flush=True)

    records = [_record(tracker.client, run_id, ok) for run_id, ok in finished]
    for record, (_, ok) in zip(records, finished):
        defense, dataset, backbone, _ = record.key
        result.runs[run_key(dataset, backbone, defense, record.seed)] = _reference_run(record, ok)
    for entry in build_entries(records, published, policy) if records else []:
        result.reproduced.extend(_cells(item.name, entry, attacks, result.runs))
    return result


def _cells(item: str, entry: Mapping[str, Any], attacks: Sequence[str],
           runs: Mapping[str, Mapping[str, Any]]) -> list[Reproduced]:
    """The entry's compared cells, with each seed's config hash, fingerprint and counts (``runs``:
    run key -> the reference view of that run)."""
    hashes = {r["seed"]: r["config_hash"] for r in entry["runs"]}
    ref_runs = {seed: runs.get(run_key(entry["dataset"], entry["backbone"], entry["defense"], seed), {})
                for seed in hashes}
    stats = [(name, entry["metrics"][name]) for name in ("clean", "epoch_time") if name in entry["metrics"]]
    for attack in attacks:
        for name, stat in sorted(entry["attacks"].get(attack, {}).get("metrics", {}).items()):
            if name in REFERENCE_METRICS:
                stats.append((f"{attack}.{name}", stat))
    return [Reproduced(item=item, profile=entry["profile"], dataset=entry["dataset"], backbone=entry["backbone"],
                       defense=entry["defense"], metric=metric,
                       values={v["seed"]: v["value"] for v in stat["values"] if v["value"] is not None},
                       mean=stat["mean"], published=tuple(stat.get("published", ())), config_hashes=hashes,
                       fingerprints={seed: r["fingerprint"] for seed, r in ref_runs.items() if r.get("fingerprint")},
                       counts={seed: r["counts"][metric] for seed, r in ref_runs.items()
                               if metric in r.get("counts", {})})
            for metric, stat in stats]


# --- the command -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckRequest:
    """What to check: the check set's items (or one ad hoc item) and how."""

    check_set: CheckSet
    items: tuple[CheckItem, ...]
    label: str  # printed in the summary
    update_hint: str  # the command that writes the references
    against: tuple[str, ...] | None = None  # None: each item's own
    update_reference: bool = False
    references: Path = REFERENCE_DIR
    tracking_uri: str | None = None
    no_run: bool = False
    flag_unused_deviations: bool = True


def run_check(request: CheckRequest, out: Any = None) -> int:
    """Run the request, print the table and the summary; return the exit code."""
    from defenses import DEFENSES
    from leaderboard.published import load_published
    from leaderboard.tolerance import load_policy

    out = out or sys.stdout
    policy, published = load_policy(), load_published()
    tolerances = request.check_set.reference_tolerances
    deviations = request.check_set.known_deviations
    results = [run_item(item, request.tracking_uri, request.no_run, published, policy) for item in request.items]
    errors = [e for r in results for e in r.errors]

    references: dict[str, dict[str, Any]] = {}
    for result in results:
        if result.profile not in references:
            references[result.profile] = load_reference(reference_path(request.references, result.profile))
    if request.update_reference:
        _write_references(request, results, references, DEFENSES.names(), out)

    rows: list[Row] = []
    used: set[int] = set()
    compared_published = False
    for result in results:
        against = request.against or result.item.against
        where = reference_path(request.references, result.profile).name
        for rep in result.reproduced:
            cross = {**request.check_set.cross_machine_tolerances, **result.item.cross_machine_tolerances}
            if "reference" in against and not request.update_reference and rep.base_metric in REFERENCE_METRICS:
                rows.append(reference_row(rep, references[result.profile], where, tolerances, cross))
            if "published" in against:
                compared_published = True
                rows.extend(published_rows(rep, deviations, tolerances, used, references.get(result.profile), cross))
    if request.flag_unused_deviations and compared_published and not errors:
        rows.extend(Row("", d.cell, f"{d.paper} {d.table}", None, d.reproduced, None, None,
                        f"known deviation (seeds {list(d.seeds)}) matches no compared cell: fix or remove it in "
                        f"{request.check_set.source}", True, "stale")
                    for i, d in enumerate(deviations) if i not in used)
    print(_fingerprint_lines(references, request), file=out)
    if rows:
        print(render(rows), file=out)
    missing = {r.cell.split("/", 1)[0] for r in rows if r.kind == "missing"}  # profiles without a reference
    files = sorted(str(reference_path(request.references, profile)) for profile in missing)
    hint = missing_reference_hint(rows, request.update_hint, files)
    if hint:
        print(hint, file=out)
    print(summary(request.label, rows, len(errors)), file=out)
    if errors:
        print(f"suite: error: {len(errors)} job(s) or attack(s) failed (finished ones are compared above): "
              + "; ".join(errors), file=sys.stderr)
        return 2
    return 1 if any(r.fails for r in rows) else 0


def _fingerprint_lines(references: Mapping[str, Mapping[str, Any]], request: CheckRequest) -> str:
    """Which machine this is and which fingerprint wrote each reference: the tier a reader should expect."""
    here = machine_fingerprint()
    lines = [f"this machine: {describe(here)}"]
    for profile, ref in sorted(references.items()):
        name = reference_path(request.references, profile).name
        ids = sorted({r.get("fingerprint") or "none" for r in ref.get("runs", {}).values()})
        for fp in ids:
            details = ref.get("fingerprints", {}).get(fp)
            tier = "exact tier" if fp == here["id"] else "cross-machine tier (suite/checks: cross_machine_tolerances)"
            lines.append(f"reference {name}: written on {describe({**details, 'id': fp}) if details else fp}: {tier}")
    return "\n".join(lines)


def _write_references(request: CheckRequest, results: Sequence[ItemResult], references: dict[str, dict[str, Any]],
                      registered: Sequence[str], out: Any) -> None:
    from tabulate import tabulate

    runs: dict[str, dict[str, dict[str, Any]]] = {}
    fingerprints: dict[str, dict[str, Any]] = {}
    for result in results:
        for key, run in result.runs.items():
            run = dict(run)
            details = run.pop("fingerprint_details", None)
            if details:
                fingerprints[run["fingerprint"]] = {k: v for k, v in details.items() if k != "id"}
            runs.setdefault(result.profile, {})[key] = run
    for profile, profile_runs in runs.items():
        path = reference_path(request.references, profile)
        old = references[profile]
        new = updated_reference(old, profile, profile_runs, registered, fingerprints)
        diff = reference_diff(old, new)
        if new != old or not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dumps_reference(new), encoding="utf-8")
        references[profile] = new
        print(f"{path}: {len(diff)} value(s) changed" if diff else f"{path}: unchanged", file=out)
        if diff:
            print(tabulate(diff, headers=("run", "value", "old", "new"), disable_numparse=True), file=out)


def _request(args: argparse.Namespace) -> CheckRequest:
    selection = [("--defense", args.defense), ("--dataset", args.dataset), ("--backbone", args.backbone),
                 ("--seed", args.seed), ("--attack", args.attack)]
    chosen = [flag for flag, value in selection if value]
    against = None if args.against is None else (AGAINST if args.against == "both" else (args.against,))
    references = Path(args.references) if args.references else REFERENCE_DIR
    suffix = f" --references {args.references}" if args.references else ""
    common = dict(against=against, update_reference=args.update_reference, references=references,
                  tracking_uri=args.tracking_uri, no_run=args.no_run)
    if args.profile is None:
        if chosen:
            raise SuiteError(f"suite check: {', '.join(chosen)} select cells of an ad hoc check; "
                             "use them with --profile, or edit the check set")
        name = args.check_set or DEFAULT_SET
        check_set = load_check_set(name)
        return CheckRequest(check_set, check_set.items, f"--set {name}",
                            f"suite check --set {name}{suffix} --update-reference", **common)
    check_set = load_check_set(DEFAULT_SET)  # its reference tolerances and known deviations
    item = CheckItem(name="profile", profile=args.profile,
                     defenses=tuple(args.defense) if args.defense else None,
                     datasets=tuple(args.dataset) if args.dataset else None,
                     backbones=tuple(args.backbone) if args.backbone else None,
                     seeds=tuple(args.seed) if args.seed else None, attacks=tuple(args.attack) if args.attack else None)
    picked = " ".join(f"{flag} {v}" for flag, values in selection if values for v in values)
    hint = " ".join(f"suite check --profile {args.profile} {picked}{suffix} --update-reference".split())
    return CheckRequest(check_set, (item,), f"--profile {args.profile}", hint, flag_unused_deviations=False, **common)


def _cmd_check(args: argparse.Namespace) -> int:
    return run_check(_request(args))


def add_parser(sub: Any) -> None:
    """Register ``check`` on the ``suite`` sub-parser collection."""
    p = sub.add_parser("check", help="re-run (or reuse) jobs and fail when a reproduced number drifted from its "
                                     "reference or published value")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--set", dest="check_set",
                       help=f"check set: name in suite/checks/ or YAML path (default: {DEFAULT_SET})")
    which.add_argument("--profile", help="ad hoc check of a profile's cells instead of a check set "
                                         f"(reference tolerances and known deviations of the '{DEFAULT_SET}' set)")
    p.add_argument("--defense", action="append", help="with --profile: defense (repeatable)")
    p.add_argument("--dataset", action="append", help="with --profile: dataset (repeatable)")
    p.add_argument("--backbone", action="append", help="with --profile: backbone (repeatable)")
    p.add_argument("--seed", action="append", type=int, help="with --profile: seed (repeatable)")
    p.add_argument("--attack", action="append", help="with --profile: attack (repeatable; default: the profile's)")
    p.add_argument("--against", choices=("published", "reference", "both"),
                   help="compare with published values, the committed references, or both (default: each item's)")
    p.add_argument("--update-reference", action="store_true",
                   help="rewrite the reference files from these runs and print the diff (commit it after review)")
    p.add_argument("--references", help=f"folder of reference JSON files (default: {REFERENCE_DIR})")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    p.add_argument("--no-run", action="store_true",
                   help="train and attack nothing: compare the finished runs already in the tracking store")
    p.set_defaults(func=_cmd_check)
