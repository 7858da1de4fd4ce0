"""``suite check``: comparison rules on hand-made numbers, reference files, check sets, and (slow)
the whole loop: write references, re-check, then a change that moves the numbers fails."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from leaderboard.compare import Cell, compare_cell
from leaderboard.published import PublishedResult
from leaderboard.tolerance import parse_policy
from suite.run import check as check_mod
from suite.run.check import CheckItem, CheckRequest, ItemResult, load_check_set, parse_check_set, run_check
from leaderboard.check_report import (KnownDeviation, Reproduced, dumps_reference, expected_from_reference,
                                load_reference, published_rows, reference_diff, reference_row, summary,
                                updated_reference)
from suite.cli import main
from suite.core.errors import SuiteError

TOL = {"clean": 1e-6, "aua": 1e-6, "suc": 1e-6, "queries": 1e-6}
POLICY = parse_policy({
    "version": 1, "tolerances": {"clean": 1.0, "aua": 3.0},
    "never_comparable": {"smoke": "smoke profile: regression reference only"},
    "protocols": {"cpu": {"profile_versions": [1], "follows": [
        {"paper": "flat2022", "datasets": ["sst2_sentence"], "backbones": ["cnn"]}]}},
}, "test policy")


def rep(metric: str = "clean", values: dict[int, float] | None = None, profile: str = "smoke",
        published: tuple = (), hashes: dict[int, str] | None = None) -> Reproduced:
    values = {0: 80.0} if values is None else values
    mean = round(sum(values.values()) / len(values), 6) if values else None
    return Reproduced(item="it", profile=profile, dataset="sst2_sentence", backbone="cnn", defense="finetune",
                      metric=metric, values=values, mean=mean, published=published, config_hashes=hashes or {},
                      fingerprints={seed: FP for seed in values})


FP = "same-machine"  # these tests compare on one fingerprint (exact tier); tests/test_check_tiers.py: across


def reference(**runs: dict[str, Any]) -> dict[str, Any]:
    return {"schema": "suite-check-reference/1", "profile": "smoke",
            "runs": {f"sst2_sentence/cnn/finetune/{k}": {"fingerprint": FP, **v} for k, v in runs.items()}}


# --- reference comparisons ---------------------------------------------------------------------------

def test_reference_within_outside_and_boundary() -> None:
    ref = reference(seed0={"config_hash": "aaa", "metrics": {"clean": 80.0}})
    same = reference_row(rep(values={0: 80.0}), ref, "smoke.json", TOL)
    assert (same.status, same.fails, same.difference, same.expected) == ("matches", False, 0.0, 80.0)

    moved = reference_row(rep(values={0: 80.5}, hashes={0: "bbb"}), ref, "smoke.json", TOL)
    assert moved.fails and moved.status.startswith("deviates")
    assert moved.difference == pytest.approx(0.5) and moved.reproduced == 80.5
    assert "config hash changed (seed 0: aaa -> bbb)" in moved.status
    assert moved.against == "reference (smoke.json)"

    wide = {**TOL, "clean": 0.5}  # |difference| == tolerance is within; a hair more is outside
    assert not reference_row(rep(values={0: 80.5}), ref, "smoke.json", wide).fails
    assert reference_row(rep(values={0: 80.500002}), ref, "smoke.json", wide).fails
    below = reference_row(rep(values={0: 79.5}), ref, "smoke.json", wide)
    assert not below.fails and below.difference == pytest.approx(-0.5)


def test_reference_mean_over_the_seeds_that_ran() -> None:
    ref = reference(seed0={"metrics": {"clean": 80.0}}, seed1={"metrics": {"clean": 82.0}},
                    seed2={"metrics": {"clean": 90.0}})
    assert expected_from_reference(ref, rep(values={0: 1.0, 1: 1.0})) == (81.0, None)
    assert expected_from_reference(ref, rep(values={2: 1.0})) == (90.0, None)
    row = reference_row(rep(values={0: 80.0, 1: 82.0}), ref, "smoke.json", TOL)
    assert row.status == "matches" and row.expected == 81.0


def test_missing_reference_fails_and_says_what_to_do() -> None:
    ref = reference(seed0={"metrics": {"clean": 80.0}})
    no_seed = reference_row(rep(values={1: 80.0}), ref, "smoke.json", TOL)
    assert no_seed.fails and no_seed.kind == "missing" and "seed 1" in no_seed.status
    no_metric = reference_row(rep("pwws.aua"), ref, "smoke.json", TOL)
    assert no_metric.fails and "no pwws.aua" in no_metric.status
    empty = reference_row(rep(), {}, "smoke.json", TOL)
    assert empty.fails and empty.kind == "missing"
    hint = check_mod.missing_reference_hint([no_seed, empty], "suite check --set ci --update-reference",
                                            ["suite/references/smoke.json"])
    assert hint is not None and "`suite check --set ci --update-reference`" in hint
    assert "commit suite/references/smoke.json" in hint
    assert check_mod.missing_reference_hint([], "x", []) is None


def test_metric_without_reference_tolerance_is_not_comparable() -> None:
    ref = reference(seed0={"metrics": {"k-pgd.cosine": 0.9}})
    row = reference_row(rep("k-pgd.cosine", {0: 0.5}), ref, "smoke.json", TOL)
    assert not row.fails and row.kind == "not comparable" and "no reference tolerance for cosine" in row.status


# --- published comparisons and known deviations ------------------------------------------------------

def record(value: float, table: str = "Table 2", metric: str = "clean", attack: str = "none") -> PublishedResult:
    return PublishedResult(paper="flat2022", table=table, dataset="sst2_sentence", backbone="cnn", defense="finetune",
                           train_attack=None, eval_attack=attack, metric=metric, value=value, value_text=f"{value:.2f}")


def published_rep(reproduced: float, profile: str = "cpu", value: float = 84.18) -> Reproduced:
    cell = Cell(profile=profile, profile_version=1, dataset="sst2_sentence", backbone="cnn", defense="finetune",
                train_attack=None, metric="clean")
    rows = compare_cell(cell, reproduced, [record(value)], POLICY)
    return rep("clean", {0: reproduced}, profile=profile, published=tuple(rows))


def test_published_reproduced_deviates_not_comparable_and_unpublished() -> None:
    [ok] = published_rows(published_rep(84.0), (), TOL)
    assert (ok.status, ok.fails, ok.against, ok.expected) == ("reproduced", False, "flat2022 Table 2", 84.18)
    [edge] = published_rows(published_rep(85.18), (), TOL)  # difference == tolerance 1.0
    assert edge.status == "reproduced"
    [miss] = published_rows(published_rep(80.0), (), TOL)
    assert miss.status == "deviates" and miss.fails and miss.difference == pytest.approx(-4.18)
    [nc] = published_rows(published_rep(80.0, profile="smoke"), (), TOL)
    assert not nc.fails and nc.status == "not comparable: smoke profile: regression reference only"
    [none] = published_rows(rep("pwws.suc"), (), TOL)
    assert none.status == "no published value" and not none.fails
    assert published_rows(rep("epoch_time"), (), TOL) == []


def deviation(reproduced: float = 80.0, difference: float = -4.18, **kw: Any) -> KnownDeviation:
    fields = dict(cell="cpu/sst2_sentence/cnn/finetune/clean", seeds=(0,), paper="flat2022", table="Table 2",
                  reason="GloVe 50d for word2vec 300d", reproduced=reproduced, difference=difference)
    return KnownDeviation(**{**fields, **kw})


def test_known_deviation_reported_not_failing_until_it_drifts() -> None:
    used: set[int] = set()
    [known] = published_rows(published_rep(80.0), [deviation()], TOL, used)
    assert known.status == "deviates (known: GloVe 50d for word2vec 300d)" and not known.fails
    assert known.difference == pytest.approx(-4.18) and used == {0}

    [drifted] = published_rows(published_rep(80.5), [deviation()], TOL)
    assert drifted.fails and "DRIFTED" in drifted.status and "declared reproduced 80, now 80.5" in drifted.status

    # still a miss but moved within the (here wider) reference tolerance: still known
    [small] = published_rows(published_rep(80.0000005), [deviation()], TOL)
    assert not small.fails

    # a declaration whose numbers do not add up (e.g. the published value was re-transcribed)
    [stale] = published_rows(published_rep(80.0, value=85.0), [deviation()], TOL)
    assert stale.fails and "out of date" in stale.status

    # now within the published tolerance at the declared value: passes, asks to drop the declaration
    [fixed] = published_rows(published_rep(83.5), [deviation(83.5, 83.5 - 84.18)], TOL)
    assert not fixed.fails and "remove the declaration" in fixed.status

    # declarations are per seed set, paper and table
    for other in (deviation(seeds=(0, 1)), deviation(table="Table 3"), deviation(cell="cpu/trec/cnn/finetune/clean")):
        [row] = published_rows(published_rep(80.0), [other], TOL)
        assert row.status == "deviates" and row.fails


def test_summary_counts_and_verdict() -> None:
    ref = reference(seed0={"metrics": {"clean": 80.0}})
    rows = [reference_row(rep(values={0: 80.0}), ref, "s.json", TOL),
            *published_rows(published_rep(80.0), [deviation()], TOL),
            *published_rows(published_rep(80.0, profile="smoke"), (), TOL)]
    line = summary("--set ci", rows)
    assert line.startswith("suite check --set ci: OK: 2 compared, 2 pass (1 of them known deviations), 0 outside")
    assert "1 not comparable" in line
    rows.append(reference_row(rep(values={0: 81.0}), ref, "s.json", TOL))
    assert "FAIL: 3 compared, 2 pass" in summary("x", rows)
    assert "FAIL" in summary("x", rows[:1], errors=1) and "1 job error(s)" in summary("x", rows[:1], errors=1)


# --- reference files ---------------------------------------------------------------------------------

def test_updated_reference_merges_rounds_prunes_and_diffs() -> None:
    old = {"schema": "suite-check-reference/1", "profile": "smoke", "runs": {
        "sst2_sentence/cnn/finetune/seed0": {"config_hash": "aaa", "attacks": {"deepwordbug": "d1"},
                                             "metrics": {"clean": 80.0, "deepwordbug.aua": 10.0}},
        "sst2_sentence/cnn/gone-defense/seed0": {"config_hash": "zzz", "metrics": {"clean": 1.0}},
        "sst2_sentence/cnn/pgd/seed0": {"config_hash": "ppp", "metrics": {"clean": 70.0, "pwws.aua": 5.0}}}}
    runs = {"sst2_sentence/cnn/finetune/seed0": {"config_hash": "aaa", "attacks": {"pwws": "p1"},
                                                 "metrics": {"clean": 80.1234567, "pwws.aua": 15.0}},
            "sst2_sentence/cnn/pgd/seed0": {"config_hash": "qqq", "attacks": {"pwws": "p1"},
                                            "metrics": {"clean": 71.0, "pwws.aua": 5.0}}}
    new = updated_reference(old, "smoke", runs, ["finetune", "pgd"])
    finetune = new["runs"]["sst2_sentence/cnn/finetune/seed0"]
    assert finetune["metrics"] == {"clean": 80.123457, "deepwordbug.aua": 10.0, "pwws.aua": 15.0}  # same hash: kept
    assert finetune["attacks"] == {"deepwordbug": "d1", "pwws": "p1"}
    assert new["runs"]["sst2_sentence/cnn/pgd/seed0"]["metrics"] == {"clean": 71.0, "pwws.aua": 5.0}
    assert "sst2_sentence/cnn/gone-defense/seed0" not in new["runs"]
    diff = reference_diff(old, new)
    assert ("sst2_sentence/cnn/finetune/seed0", "clean", "80", "80.123457") in diff
    assert ("sst2_sentence/cnn/finetune/seed0", "pwws.aua", "(none)", "15") in diff
    assert ("sst2_sentence/cnn/gone-defense/seed0", "clean", "1", "(removed)") in diff
    assert ("sst2_sentence/cnn/pgd/seed0", "config_hash", "ppp", "qqq") in diff
    assert not any(d[0].endswith("pgd/seed0") and d[1] == "pwws.aua" for d in diff)  # unchanged value
    text = dumps_reference(new)
    assert text == dumps_reference(json.loads(text)) and text.endswith("\n")
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_load_reference_errors(tmp_path: Path) -> None:
    assert load_reference(tmp_path / "none.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_reference(bad)
    bad.write_text('{"runs": {}}', encoding="utf-8")
    with pytest.raises(SuiteError, match="not a suite check reference"):
        load_reference(bad)


# --- check sets --------------------------------------------------------------------------------------

def test_ci_check_set_as_specified() -> None:
    ci = load_check_set("ci")
    anchor, flat_trec, smoke = ci.items
    assert (anchor.profile, anchor.defenses, anchor.datasets, anchor.backbones, anchor.seeds, anchor.attacks) == (
        "cpu", ("finetune",), ("sst2_sentence", "trec"), ("cnn",), (0,), ("pwws",))
    assert set(anchor.against) == {"published", "reference"}
    # FLAT's CNN trec "-adv(PWWS)" and "-FLAT (PWWS)" against Tables 2-3 and their references
    assert (flat_trec.profile, flat_trec.defenses, flat_trec.datasets, flat_trec.backbones, flat_trec.attacks) == (
        "cpu", ("adv-aug", "flat"), ("trec",), ("cnn",), ("pwws",))
    assert set(flat_trec.against) == {"published", "reference"}
    assert smoke.profile == "smoke" and smoke.all_defenses and smoke.against == ("reference",)
    assert smoke.attacks == ("pwws", "deepwordbug") and smoke.backbones == ("cnn",)
    assert all(v <= 1e-6 for v in ci.reference_tolerances.values())
    assert set(ci.reference_tolerances) >= {"clean", "aua", "suc", "queries"}
    published_profiles = {item.profile for item in ci.items if "published" in item.against}
    for dev in ci.known_deviations:  # every declaration names a cell the set compares with papers
        assert dev.cell.split("/")[0] in published_profiles, dev


def test_all_defenses_resolved_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from defenses import DEFENSES
    from defenses.finetune import FineTune

    class Brand(FineTune):
        """A defense registered after the check set was written."""

    Brand.name = "brand-new"
    monkeypatch.setitem(DEFENSES._entries, "brand-new", Brand)
    monkeypatch.setitem(DEFENSES._entries, "finetune-alias", FineTune)  # an alias is not a second defense
    names = CheckItem("smoke", "smoke", all_defenses=True, skip_defenses={"pgd": "why"}).defense_names()
    assert "brand-new" in names and "finetune" in names
    assert "finetune-alias" not in names and "pgd" not in names
    assert CheckItem("x", "smoke").defense_names() is None  # the profile's own


@pytest.mark.parametrize("patch, message", [
    ({"items": []}, "items must be a non-empty list"),
    ({"reference_tolerances": {"clean": -1}}, "non-negative"),
    ({"reference_tolerances": {"epoch_time": 1}}, "not a compared metric"),
    ({"items": [{"name": "a", "profile": "smoke", "against": ["papers"]}]}, "against must list"),
    ({"items": [{"name": "a", "profile": "smoke", "defences": ["x"]}]}, "did you mean 'defenses'"),
    ({"items": [{"name": "a", "profile": "smoke"}, {"name": "a", "profile": "cpu"}]}, "unique"),
    ({"known_deviations": [{"cell": "cpu/clean", "seeds": [0], "paper": "p", "table": "Table 1", "reason": "r",
                            "reproduced": 1, "difference": 0}]}, "cell must read"),
    ({"known_deviations": [{"cell": "a/b/c/d/clean", "seeds": [0]}]}, "missing required setting"),
])
def test_check_set_errors_are_one_line(patch: dict[str, Any], message: str, tmp_path: Path) -> None:
    raw = {"name": "t", "version": 1, "description": "d", "reference_tolerances": {"clean": 0},
           "items": [{"name": "a", "profile": "smoke"}], **patch}
    with pytest.raises(SuiteError, match=message) as info:
        parse_check_set(raw, "t.yaml", tmp_path)
    assert "\n" not in str(info.value)


def test_profile_paths_are_relative_to_the_check_set(tmp_path: Path) -> None:
    raw = {"name": "t", "version": 1, "description": "d", "reference_tolerances": {},
           "items": [{"name": "a", "profile": "mine.yaml"}, {"name": "b", "profile": "smoke"}]}
    a, b = parse_check_set(raw, "t.yaml", tmp_path).items
    assert a.profile == str(tmp_path / "mine.yaml") and b.profile == "smoke"


def test_ad_hoc_profile_request() -> None:
    from suite.cli import build_parser

    args = build_parser().parse_args(["check", "--profile", "smoke", "--defense", "finetune", "--seed", "0",
                                      "--against", "both", "--references", "refs"])
    request = check_mod._request(args)
    [item] = request.items
    assert (item.profile, item.defenses, item.seeds, item.datasets, item.attacks) == (
        "smoke", ("finetune",), (0,), None, None)
    assert request.against == ("published", "reference") and request.references == Path("refs")
    assert request.update_hint == ("suite check --profile smoke --defense finetune --seed 0 --references refs "
                                   "--update-reference")
    assert request.check_set.name == "ci" and not request.flag_unused_deviations  # ci's tolerances
    default = check_mod._request(build_parser().parse_args(["check"]))
    assert default.label == "--set ci" and default.items == load_check_set("ci").items and default.against is None


def test_selection_flags_need_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--defense", "finetune"]) == 2
    assert "use them with --profile" in capsys.readouterr().err


# --- run_check with hand-made runs (no training) -----------------------------------------------------

def _fake_runs(monkeypatch: pytest.MonkeyPatch, results: dict[str, ItemResult]) -> None:
    monkeypatch.setattr(check_mod, "run_item", lambda item, *a, **k: dataclasses.replace(results[item.name], item=item))


def _smoke_result(clean: float, aua: float = 20.0, defense: str = "finetune") -> ItemResult:
    item = CheckItem("smoke", "smoke", against=("reference",))
    reps = [Reproduced("smoke", "smoke", "sst2_sentence", "cnn", defense, m, {0: v}, v, (), {0: "h1"}, {0: FP})
            for m, v in (("clean", clean), ("pwws.aua", aua), ("epoch_time", 3.0))]
    runs = {f"sst2_sentence/cnn/{defense}/seed0": {"config_hash": "h1", "git_commit": "c", "profile_version": 1,
                                                   "fingerprint": FP, "attacks": {"pwws": "a"},
                                                   "metrics": {"clean": clean, "pwws.aua": aua}}}
    return ItemResult(item, "smoke", reps, runs)


def test_run_check_update_then_drift_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    check_set = parse_check_set({"name": "t", "version": 1, "description": "d", "reference_tolerances": TOL,
                                 "items": [{"name": "smoke", "profile": "smoke"}]}, "t.yaml", tmp_path)
    request = CheckRequest(check_set, check_set.items, "--set t", "suite check --set t --update-reference",
                           references=tmp_path / "refs")
    _fake_runs(monkeypatch, {"smoke": _smoke_result(80.0)})
    assert run_check(request) == 1  # nothing committed yet
    out = capsys.readouterr().out
    assert "no reference" in out and "`suite check --set t --update-reference`" in out
    assert out.splitlines()[-2].endswith(f"commit {tmp_path / 'refs' / 'smoke.json'}")

    assert run_check(dataclasses.replace(request, update_reference=True)) == 0
    out = capsys.readouterr().out
    written = tmp_path / "refs" / "smoke.json"
    assert f"{written}: 4 value(s) changed" in out and "(none)" in out  # config hash, fingerprint, 2 values
    assert json.loads(written.read_text())["runs"]["sst2_sentence/cnn/finetune/seed0"]["metrics"] == {
        "clean": 80.0, "pwws.aua": 20.0}

    assert run_check(request) == 0
    out = capsys.readouterr().out
    assert out.count("matches") == 2 and "epoch_time" not in out  # epoch time never compared

    _fake_runs(monkeypatch, {"smoke": _smoke_result(80.0, aua=25.0)})
    assert run_check(request) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if "pwws.aua" in l)
    assert line.split()[:8] == ["smoke/sst2_sentence/cnn/finetune/pwws.aua", "reference", "(smoke.json)",
                                "20", "25", "+5", "1e-06", "exact"] and line.rstrip().endswith("deviates")

    _fake_runs(monkeypatch, {"smoke": _smoke_result(80.0)})
    before = written.read_text()
    assert run_check(dataclasses.replace(request, update_reference=True)) == 0
    assert f"{written}: unchanged" in capsys.readouterr().out and written.read_text() == before


def test_job_errors_exit_2_and_unused_declarations_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    check_set = parse_check_set({
        "name": "t", "version": 1, "description": "d", "reference_tolerances": TOL,
        "items": [{"name": "smoke", "profile": "smoke", "against": ["published"]}],
        "known_deviations": [{"cell": "cpu/trec/cnn/finetune/clean", "seeds": [0], "paper": "flat2022",
                              "table": "Table 2", "reason": "r", "reproduced": 90.0, "difference": -1.2}]},
        "t.yaml", tmp_path)
    request = CheckRequest(check_set, check_set.items, "--set t", "hint", references=tmp_path)
    _fake_runs(monkeypatch, {"smoke": _smoke_result(80.0)})
    assert run_check(request) == 1
    assert "matches no compared cell" in capsys.readouterr().out

    broken = _smoke_result(80.0)
    broken.errors.append("finetune/sst2_sentence/cnn/seed0 attack pwws: missing resource")
    _fake_runs(monkeypatch, {"smoke": broken})
    assert run_check(request) == 2
    captured = capsys.readouterr()
    assert "1 job error(s)" in captured.out and "missing resource" in captured.err


def test_a_crashing_job_is_one_line_and_the_others_still_run(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import suite.run.runner

    calls = []

    def run_job(job: Any, tracker: Any, attacks: Any = None) -> Any:
        calls.append(job.dataset)
        raise (RuntimeError("boom\nsecond line") if job.dataset == "sst2_sentence" else SuiteError("no data"))

    monkeypatch.setattr(suite.run.runner, "run_job", run_job)
    item = CheckItem("smoke", "smoke", defenses=("finetune",), backbones=("cnn",), attacks=())
    result = check_mod.run_item(item, None, False, [], POLICY)
    assert calls == ["sst2_sentence", "trec"] and result.reproduced == [] and result.runs == {}
    assert result.errors == ["finetune/sst2_sentence/cnn/seed0: RuntimeError: boom",
                             "finetune/trec/cnn/seed0: no data"]
    err = capsys.readouterr().err
    assert "suite: error: finetune/sst2_sentence/cnn/seed0: RuntimeError: boom\n" in err and "second line" not in err


# --- end to end (trains) -----------------------------------------------------------------------------

TINY_PROFILE = """\
name: tiny
version: 1
description: tiny profile of the suite check tests
seeds: [0]
protocol: {split_seed: 2024, attack_set_seed: 2024, attack_set_size: 8}
train: {cpu_threads: 1}
datasets:
  sst2_sentence: {train_limit: 300, validation_limit: 40, test_limit: 40}
backbones:
  cnn: {epochs: 2, batch_size: 50, lr: 1.0e-3, optimizer: adam, schedule: constant, max_grad_norm: null}
defenses:
  finetune: {}
attacks: [pwws]
"""
TINY_SET = """\
name: tinyset
version: 1
description: tiny check set of the suite check tests
reference_tolerances: {clean: 1.0e-6, aua: 1.0e-6, suc: 1.0e-6, queries: 1.0e-6}
items:
  - {name: tiny, profile: tiny.yaml, defenses: [finetune], attacks: [pwws], against: [reference]}
"""


@pytest.mark.slow
def test_references_then_a_moved_number_fails(workdir: Path, mirror: Path, resources: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "tiny.yaml").write_text(TINY_PROFILE, encoding="utf-8")
    (workdir / "set.yaml").write_text(TINY_SET, encoding="utf-8")
    refs = workdir / "refs"
    args = ["check", "--set", str(workdir / "set.yaml"), "--references", str(refs)]

    assert main(args + ["--update-reference"]) == 0
    out = capsys.readouterr().out
    written = json.loads((refs / "tiny.json").read_text())
    metrics = written["runs"]["sst2_sentence/cnn/finetune/seed0"]["metrics"]
    assert set(metrics) == {"clean", "pwws.aua", "pwws.suc", "pwws.queries"}
    assert f"{refs / 'tiny.json'}: 6 value(s) changed" in out  # 4 metrics, the config hash, the fingerprint

    assert main(args + ["--no-run"]) == 0  # the finished run, compared again: identical
    out = capsys.readouterr().out
    assert out.count("matches") == 4 and "OK: 4 compared, 4 pass" in out

    # a profile change that moves the numbers: a new config hash, trained again, outside tolerance
    (workdir / "tiny.yaml").write_text(TINY_PROFILE.replace("lr: 1.0e-3", "lr: 3.0e-2"), encoding="utf-8")
    assert main(args) == 1
    _assert_deviates(capsys.readouterr().out, metrics, "config hash changed")

    # a code change with the same config (as in CI: a fresh store): the defense's loss learns flipped labels
    import torch.nn.functional as F
    from defenses.finetune import FineTune

    (workdir / "tiny.yaml").write_text(TINY_PROFILE, encoding="utf-8")
    monkeypatch.setattr(FineTune, "loss", lambda self, batch, context: F.cross_entropy(
        self.model(batch).logits, 1 - batch["labels"]))
    assert main(args + ["--tracking-uri", f"sqlite:///{workdir / 'fresh.db'}"]) == 1
    _assert_deviates(capsys.readouterr().out, metrics, None)


def _assert_deviates(out: str, reference_metrics: dict[str, float], note: str | None) -> None:
    rows = [line for line in out.splitlines() if line.startswith("tiny/sst2_sentence/cnn/finetune/")]
    deviating = [line for line in rows if "deviates" in line]
    assert deviating, out
    for line in deviating:
        cell, against, where, expected, reproduced, diff, tol = line.split()[:7]
        metric = cell.rsplit("/", 1)[1]
        assert (against, where, tol) == ("reference", "(tiny.json)", "1e-06")
        assert float(expected) == pytest.approx(reference_metrics[metric])
        assert float(reproduced) != float(expected)
        assert float(diff) == pytest.approx(float(reproduced) - float(expected), abs=1e-6)
        if note:
            assert note in line
    assert "FAIL" in out.splitlines()[-1]
