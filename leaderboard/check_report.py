"""What ``suite check`` compares and prints: reproduced cells against committed references and
against published values, known deviations, the reference files and their diffs.

Pure functions over plain numbers (no MLflow, no training), so every rule is unit-tested on
hand-made values. ``suite.run.check`` runs the jobs and feeds the reproduced cells in here.

A *cell* is one reproduced number: ``<profile>/<dataset>/<backbone>/<defense>/<metric>`` with
``metric`` = ``clean`` or ``<attack>.<aua|suc|queries|cosine|euclidean|kendall_tau|topk_intersection>`` (the last two: IG), the mean over the seeds
that ran. Published comparisons use the leaderboard's rules and tolerances
(``leaderboard.compare``, ``leaderboard/tolerances.yaml``); reference comparisons use the check
set's ``reference_tolerances``.

Reference tiers. A reference run records the fingerprint of the machine that wrote it
(``suite.run.fingerprint``: CPU vendor/model/ISA, ATen capability, kernel settings, torch/MKL
versions, libc). A reproduced run with the same fingerprint is compared **exactly** (the check
set's ``reference_tolerances``, 1e-6: CPU runs are bit-identical on one fingerprint); a run from
another fingerprint is compared with the **cross-machine** tolerance (``cross_machine_tolerances``),
measured across kernel paths and machines and expressed in test/attacked examples for accuracies
(converted to percentage points with the cell's own counts) and in model queries for #Query. Every
row says which tier it used.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from leaderboard.tolerance import DEVIATES, NO_PUBLISHED, NOT_COMPARABLE, REPRODUCED
from suite.core.errors import SuiteError

REFERENCE_SCHEMA = "suite-check-reference/1"
# Metrics a reference records and compares (leaderboard names); epoch time is hardware-bound
# and never compared.
REFERENCE_METRICS = ("clean", "aua", "suc", "queries", "cosine", "euclidean", "kendall_tau", "topk_intersection")
MATCHES = "matches"
EXACT, CROSS_MACHINE = "exact", "cross-machine"
# Units of the cross-machine tolerances: accuracies in examples (of the count that is the metric's
# denominator), #Query in mean model queries, k-PGD feature measures in their own units.
EXAMPLE_METRICS = ("clean", "aua", "suc")
NO_REFERENCE = "no reference"
_EPS = 1e-9  # float noise on the boundary |difference| == tolerance (as leaderboard.tolerance.judge)


@dataclass(frozen=True)
class Reproduced:
    """One reproduced cell of a check item: per-seed values, their mean, the published rows
    (``leaderboard.compare.compare_cell``) and the runs' config hashes."""

    item: str
    profile: str
    dataset: str
    backbone: str
    defense: str
    metric: str  # "clean", "epoch_time" or "<attack>.<metric>"
    values: Mapping[int, float]  # seed -> value (rounded to 6 decimals, as leaderboard entries)
    mean: float | None
    published: tuple[Mapping[str, Any], ...] = ()
    config_hashes: Mapping[int, str] = field(default_factory=dict)
    fingerprints: Mapping[int, str] = field(default_factory=dict)  # seed -> fingerprint id of the run
    counts: Mapping[int, float] = field(default_factory=dict)  # seed -> the metric's denominator (examples)

    @property
    def cell(self) -> str:
        return f"{self.profile}/{self.dataset}/{self.backbone}/{self.defense}/{self.metric}"

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.values))

    @property
    def base_metric(self) -> str:
        return self.metric.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class KnownDeviation:
    """A published value the reproduction is known to miss, declared in the check set.

    ``reproduced`` and ``difference`` (reproduced - published) are the values measured when
    the deviation was declared; the miss stays visible ("deviates (known: ...)") and stops
    failing only as long as the reproduced value stays where it was declared.
    """

    cell: str
    seeds: tuple[int, ...]
    paper: str
    table: str
    reason: str
    reproduced: float
    difference: float

    def matches(self, rep: Reproduced, row: Mapping[str, Any]) -> bool:
        return (self.cell == rep.cell and self.seeds == rep.seeds and self.paper == row.get("paper")
                and self.table == row.get("table"))


@dataclass(frozen=True)
class Row:
    """One printed comparison."""

    item: str
    cell: str
    against: str
    expected: float | None
    reproduced: float | None
    difference: float | None
    tolerance: float | None
    status: str
    fails: bool
    kind: str  # "compared" | "known" | "not comparable" | "no published value" | "missing" | "error"
    tier: str = ""  # reference rows: "exact" (same fingerprint) or "cross-machine"


# --- reference comparisons -------------------------------------------------------------------------

def run_key(dataset: str, backbone: str, defense: str, seed: int) -> str:
    return f"{dataset}/{backbone}/{defense}/seed{seed}"


def expected_from_reference(reference: Mapping[str, Any], rep: Reproduced) -> tuple[float | None, str | None]:
    """(mean of the reference's values over the cell's seeds, None) or (None, why there is none)."""
    runs = reference.get("runs", {})
    values = []
    for seed in rep.seeds:
        run = runs.get(run_key(rep.dataset, rep.backbone, rep.defense, seed))
        if run is None:
            return None, f"no reference run for seed {seed}"
        if rep.metric not in run.get("metrics", {}):
            return None, f"the reference run of seed {seed} has no {rep.metric}"
        values.append(float(run["metrics"][rep.metric]))
    return round(statistics.fmean(values), 6), None


def _config_note(reference: Mapping[str, Any], rep: Reproduced) -> str:
    changed = []
    for seed, digest in sorted(rep.config_hashes.items()):
        ref = reference.get("runs", {}).get(run_key(rep.dataset, rep.backbone, rep.defense, seed), {})
        if ref.get("config_hash") and ref["config_hash"] != digest:
            changed.append(f"seed {seed}: {ref['config_hash']} -> {digest}")
    return f"; config hash changed ({', '.join(changed)})" if changed else ""


def reference_tier(reference: Mapping[str, Any], rep: Reproduced) -> tuple[str, str]:
    """(tier, why): exact when every seed's reproduced fingerprint equals the reference run's."""
    runs = reference.get("runs", {})
    for seed in rep.seeds:
        ref_fp = runs.get(run_key(rep.dataset, rep.backbone, rep.defense, seed), {}).get("fingerprint")
        got = rep.fingerprints.get(seed)
        if not ref_fp:
            return CROSS_MACHINE, f"the reference run of seed {seed} records no fingerprint"
        if not got:
            return CROSS_MACHINE, f"the reproduced run of seed {seed} records no fingerprint"
        if ref_fp != got:
            return CROSS_MACHINE, f"fingerprint {got} != reference {ref_fp}"
    return EXACT, "same fingerprint"


def cross_machine_tolerance(rep: Reproduced, reference: Mapping[str, Any],
                            cross: Mapping[str, float]) -> tuple[float | None, str]:
    """The cross-machine tolerance of ``rep`` in the metric's unit, and how it was derived.

    Accuracies: ``k`` examples of the metric's denominator ``n`` (test examples for clean, attacked
    examples for aua, attempted = not skipped for suc; the smallest count over the seeds, from the
    reference run, else the reproduced run), i.e. ``100 * k / n`` percentage points; a mean over
    seeds, each within ``k`` examples, is within the same bound.
    """
    metric = rep.base_metric
    if metric not in cross:
        return None, f"no cross-machine tolerance for {metric}"
    value = float(cross[metric])
    if metric not in EXAMPLE_METRICS:
        return value, f"{value:g} {'queries' if metric == 'queries' else metric}"
    counts = []
    for seed in rep.seeds:
        ref = reference.get("runs", {}).get(run_key(rep.dataset, rep.backbone, rep.defense, seed), {})
        n = ref.get("counts", {}).get(rep.metric) or rep.counts.get(seed)
        if not n:
            return None, f"no example count for {rep.metric} (seed {seed}) to convert {value:g} examples"
        counts.append(float(n))
    n = min(counts)
    return round(100.0 * value / n, 6), f"{value:g} of {n:g} examples"


def reference_row(rep: Reproduced, reference: Mapping[str, Any], where: str, tolerances: Mapping[str, float],
                  cross_machine: Mapping[str, float] | None = None) -> Row:
    """``rep`` against the committed reference ``where`` (e.g. ``references/smoke.json``), exact on the
    fingerprint that wrote the reference, else within the cross-machine tolerance."""
    against = f"reference ({where})"
    expected, missing = expected_from_reference(reference, rep)
    tier, why = reference_tier(reference, rep)
    if tier == EXACT:
        tol, unit = tolerances.get(rep.base_metric), ""
        if tol is None:
            return Row(rep.item, rep.cell, against, None, rep.mean, None, None,
                       f"not comparable: no reference tolerance for {rep.base_metric}", False, "not comparable", tier)
    else:
        tol, unit = cross_machine_tolerance(rep, reference, cross_machine or {})
        if tol is None and expected is not None:
            return Row(rep.item, rep.cell, against, None, rep.mean, None, None,
                       f"not comparable: {why}, and {unit}", False, "not comparable", CROSS_MACHINE)
        tier = f"{CROSS_MACHINE} ({unit})" if tol is not None else CROSS_MACHINE
    if expected is None:
        return Row(rep.item, rep.cell, against, None, rep.mean, None, tol, f"{NO_REFERENCE} ({missing})", True,
                   "missing", tier)
    if rep.mean is None:
        return Row(rep.item, rep.cell, against, expected, None, None, tol,
                   "deviates: no reproduced value (missing or NaN in every seed)", True, "compared", tier)
    diff = round(rep.mean - expected, 6)
    if abs(rep.mean - expected) <= tol + _EPS:
        return Row(rep.item, rep.cell, against, expected, rep.mean, diff, tol, MATCHES, False, "compared", tier)
    return Row(rep.item, rep.cell, against, expected, rep.mean, diff, tol,
               f"{DEVIATES}{_config_note(reference, rep)}", True, "compared", tier)


# --- published comparisons -------------------------------------------------------------------------

def published_rows(rep: Reproduced, deviations: Sequence[KnownDeviation], tolerances: Mapping[str, float],
                   used: set[int] | None = None, reference: Mapping[str, Any] | None = None,
                   cross_machine: Mapping[str, float] | None = None) -> list[Row]:
    """One row per published value beside ``rep`` (``rep.published``); ``used`` collects the
    indexes of the ``deviations`` that matched a row.

    A known deviation holds while the reproduced value stays where it was declared: within the
    reference tolerance on the fingerprint that wrote ``reference`` (or without one), else within
    the cross-machine tolerance; where that is undefined for the metric, its drift is not judged
    on this machine (shown, not failed)."""
    if not rep.published:
        if rep.base_metric not in REFERENCE_METRICS:
            return []  # epoch time etc.: nothing published, nothing to say
        return [Row(rep.item, rep.cell, "published", None, rep.mean, None, None, NO_PUBLISHED, False,
                    "no published value")]
    rows = []
    for prow in rep.published:
        against = f"{prow['paper']} {prow['table']}"
        value, status = prow.get("value"), prow.get("status")
        if status == NOT_COMPARABLE:
            rows.append(Row(rep.item, rep.cell, against, value, rep.mean, None, None,
                            f"not comparable: {prow.get('reason')}", False, "not comparable"))
            continue
        diff, tol = prow.get("diff"), prow.get("tolerance")
        index = next((i for i, d in enumerate(deviations) if d.matches(rep, prow)), None)
        if index is None:
            rows.append(Row(rep.item, rep.cell, against, value, rep.mean, diff, tol, status,
                            status != REPRODUCED, "compared"))
            continue
        if used is not None:
            used.add(index)
        drift_tol: float | None = tolerances.get(rep.base_metric, 0.0)
        why = ""
        if reference is not None and _foreign(reference, rep):
            drift_tol, why = cross_machine_tolerance(rep, reference, cross_machine or {})
        rows.append(_known_row(rep, prow, deviations[index], drift_tol, why))
    return rows


def _foreign(reference: Mapping[str, Any], rep: Reproduced) -> bool:
    """Whether a reference run of ``rep``'s cell was written on another fingerprint than a seed's run."""
    runs = reference.get("runs", {})
    for seed in rep.seeds:
        ref_fp = runs.get(run_key(rep.dataset, rep.backbone, rep.defense, seed), {}).get("fingerprint")
        got = rep.fingerprints.get(seed)
        if ref_fp and got and ref_fp != got:
            return True
    return False


def _known_row(rep: Reproduced, prow: Mapping[str, Any], dev: KnownDeviation, ref_tol: float | None,
               why: str = "") -> Row:
    against = f"{prow['paper']} {prow['table']}"
    value, diff, tol, status = prow["value"], prow.get("diff"), prow.get("tolerance"), prow["status"]

    def row(text: str, fails: bool) -> Row:
        return Row(rep.item, rep.cell, against, value, rep.mean, diff, tol, text, fails, "known")

    declared_diff = dev.reproduced - value
    if abs(declared_diff - dev.difference) > 1e-6 + _EPS:
        return row(f"{status}; known-deviation declaration out of date: its reproduced value {dev.reproduced:g} "
                   f"is {declared_diff:+.6g} from the published {value:g}, but it declares {dev.difference:+g}", True)
    assert rep.mean is not None  # compare() marks a cell without a value not comparable
    moved = rep.mean - dev.reproduced
    if ref_tol is None:  # another machine and no cross-machine tolerance for the metric
        return row(f"{status} (known: {dev.reason}; drift from the declared {dev.reproduced:g} not judged on this "
                   f"machine: {why})", False)
    if abs(moved) > ref_tol + _EPS:
        return row(f"{status}; DRIFTED from the known deviation ({dev.reason}): declared reproduced "
                   f"{dev.reproduced:g}, now {rep.mean:g} ({moved:+.6g}); re-measure and update the declaration", True)
    if status == REPRODUCED:
        return row(f"{REPRODUCED} (a known deviation is declared for it: remove the declaration)", False)
    return row(f"{DEVIATES} (known: {dev.reason})", False)


# --- reference files -------------------------------------------------------------------------------

def reference_path(folder: Path, profile: str) -> Path:
    return folder / f"{profile}.json"


def load_reference(path: Path) -> dict[str, Any]:
    """A committed reference file ({} when there is none yet)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SuiteError(f"{path}: not valid JSON ({exc}); restore it from git or rewrite it with "
                         "`suite check --update-reference`") from None
    if not isinstance(data, dict) or data.get("schema") != REFERENCE_SCHEMA:
        raise SuiteError(f"{path}: not a suite check reference (schema {REFERENCE_SCHEMA}); restore it from git")
    return data


def dumps_reference(data: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, one value per line, a trailing newline."""
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def updated_reference(old: Mapping[str, Any], profile: str, runs: Mapping[str, Mapping[str, Any]],
                      registered_defenses: Iterable[str],
                      fingerprints: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``old`` with ``runs`` (run key -> {config_hash, git_commit, profile_version, fingerprint, counts,
    attacks, metrics}) written in; values are rounded to 6 decimals. A run whose config hash and
    fingerprint are unchanged keeps the metrics of attacks this update did not run; runs of defenses
    no longer registered are dropped. ``fingerprints`` (id -> details) describes the runs'
    fingerprints; the file keeps the details of every fingerprint its runs name."""
    registered = set(registered_defenses)
    merged = {k: v for k, v in old.get("runs", {}).items() if k.split("/")[2] in registered}
    for key, run in runs.items():
        previous = merged.get(key, {})
        keep = (previous.get("config_hash") == run["config_hash"]
                and previous.get("fingerprint") == run.get("fingerprint"))
        metrics = dict(previous.get("metrics", {})) if keep else {}
        metrics.update({m: round(float(v), 6) for m, v in run["metrics"].items()})
        attacks = dict(previous.get("attacks", {})) if keep else {}
        attacks.update(run.get("attacks", {}))
        counts = dict(previous.get("counts", {})) if keep else {}
        counts.update(run.get("counts", {}))
        merged[key] = {**run, "metrics": metrics, "attacks": attacks, "counts": counts}
    known = {**old.get("fingerprints", {}), **(fingerprints or {})}
    used = sorted({r.get("fingerprint") for r in merged.values() if r.get("fingerprint")})
    return {"schema": REFERENCE_SCHEMA, "profile": profile,
            "written_by": "suite check --update-reference (review the printed diff, then commit)",
            "fingerprints": {fp: dict(known.get(fp, {})) for fp in used},
            "runs": dict(sorted(merged.items()))}


def reference_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(run, field, old, new) for every value and config hash that changed, appeared or went."""

    def flat(data: Mapping[str, Any]) -> dict[tuple[str, str], str]:
        out = {}
        for key, run in data.get("runs", {}).items():
            out[(key, "config_hash")] = str(run.get("config_hash"))
            out[(key, "fingerprint")] = str(run.get("fingerprint"))
            for metric, value in run.get("metrics", {}).items():
                out[(key, metric)] = _num(value)
        return out

    before, after = flat(old), flat(new)
    return [(run, name, before.get((run, name), "(none)"), after.get((run, name), "(removed)"))
            for run, name in sorted(set(before) | set(after)) if before.get((run, name)) != after.get((run, name))]


# --- output ----------------------------------------------------------------------------------------

HEADERS = ("cell", "against", "expected", "reproduced", "difference", "tolerance", "tier", "status")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{round(float(value), 6):{'+' if signed else ''}.6f}".rstrip("0").rstrip(".")
    return "+0" if signed and text in ("+0", "-0") else text


def render(rows: Sequence[Row]) -> str:
    from tabulate import tabulate

    table = [(r.cell, r.against, _num(r.expected), _num(r.reproduced), _num(r.difference, signed=True),
              "-" if r.tolerance is None else f"{r.tolerance:g}", r.tier or "-", r.status) for r in rows]
    return tabulate(table, headers=HEADERS, disable_numparse=True)


def summary(name: str, rows: Sequence[Row], errors: int = 0) -> str:
    """One line: the verdict and how many rows of each kind."""
    compared = [r for r in rows if r.kind in ("compared", "known")]
    outside = sum(r.fails for r in compared)
    known = sum(r.kind == "known" and not r.fails for r in rows)
    missing = sum(r.kind == "missing" for r in rows)
    not_comparable = sum(r.kind == "not comparable" for r in rows)
    unpublished = sum(r.kind == "no published value" for r in rows)
    verdict = "FAIL" if outside or missing or errors else "OK"
    text = (f"suite check {name}: {verdict}: {len(compared)} compared, {len(compared) - outside} pass "
            f"({known} of them known deviations), {outside} outside tolerance; {missing} without a reference; "
            f"{not_comparable} not comparable; {unpublished} without a published value")
    return text + (f"; {errors} job error(s)" if errors else "")


def missing_reference_hint(rows: Sequence[Row], update_hint: str, files: Sequence[str]) -> str | None:
    """What to do about cells without a reference (None when every cell has one)."""
    missing = sorted({r.cell for r in rows if r.kind == "missing"})
    if not missing:
        return None
    return (f"{len(missing)} cell(s) have no committed reference (a new defense, attack or seed?): run "
            f"`{update_hint}`, review the printed diff and commit {', '.join(files)}")
