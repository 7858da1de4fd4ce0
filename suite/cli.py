"""``suite``: list registries, run profiles, pin attack sets."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from suite.core.errors import SuiteError
from suite.run.parallel import ATTACK_ENGINES, DEFAULT_ATTACK_ENGINE, JobOptions, JobOutcome, available_cores

if TYPE_CHECKING:
    from suite.run.config import Job, Profile
    from suite.run.overrides import Setting
    from suite.run.tracking import Tracker

KINDS = ("defenses", "attacks", "datasets", "backbones", "profiles", "check-sets")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as the suite's: one ``suite: error:`` line, exit 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"suite: error: {self.prog}: {message}; see '{self.prog} --help'", file=sys.stderr)
        sys.exit(2)


def _bounded_int(minimum: int, fix: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else one line saying so (``fix``: what else to do)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}{fix}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _setting(text: str) -> "Setting":
    """An argparse type: ``KEY=VALUE`` (suite.run.overrides.parse_setting), else one line saying what to write."""
    from suite.run.overrides import parse_setting

    try:
        return parse_setting(text)
    except SuiteError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_setting.__name__ = "KEY=VALUE"

SEED = _bounded_int(0)
QUERY_BUDGET = _bounded_int(1, " (omit it for no limit)")
JOBS = _bounded_int(1)


def _cmd_list(args: argparse.Namespace) -> int:
    from defenses import DEFENSES
    from suite.run.config import PROFILES, load_profile
    from suite.data import DATASETS
    from suite.models import BACKBONES

    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        print(f"{kind}:")
        if kind == "defenses":
            rows = [(n, (cls.__doc__ or "").strip().splitlines()[0]) for n, cls in DEFENSES.items()]
        elif kind == "datasets":
            rows = [(n, s.description) for n, s in DATASETS.items()]
        elif kind == "backbones":
            rows = [(n, s.description) for n, s in BACKBONES.items()]
        elif kind == "profiles":
            rows = [(n, load_profile(n).description) for n in PROFILES.names()]
        elif kind == "check-sets":
            from suite.run.check import CHECK_SETS, load_check_set

            rows = [(n, load_check_set(n).description) for n in CHECK_SETS.names()]
        else:
            from attacks import ATTACKS
            rows = [(n, f"[{a.variant}] {a.description}") for n, a in ATTACKS.items()]
        width = max(len(r[0]) for r in rows)
        for name, text in rows:
            print(f"  {name.ljust(width)}  {text}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from suite.run.config import load_profile
    from suite.run.parallel import core_budget
    from suite.run.runner import expand_jobs

    if not (args.all or args.defense or args.dataset or args.backbone):
        raise SuiteError("suite run: nothing selected; pass --all for the whole profile grid, or pick cells "
                         "with --defense / --dataset / --backbone")
    budget = core_budget(args.jobs, args.workers, available_cores())  # before anything is loaded or trained
    from attacks import ATTACKS

    settings = args.set or []
    profile = load_profile(args.profile, settings)
    for name in (args.attack or []) + ([] if args.attack or args.no_attack else list(profile.attacks)):
        ATTACKS.get(name)  # unknown attack: one line with a suggestion, before any training
    jobs = expand_jobs(profile, defenses=args.defense, datasets=args.dataset, backbones=args.backbone, seeds=args.seed)
    if settings:
        from suite.run.overrides import Selection, attribute_settings

        selection = Selection(args.defense, args.dataset, args.backbone, args.seed)
        jobs, unused = attribute_settings(args.profile, settings, jobs, selection)
        for setting in unused:
            print(f"suite: note: {setting.option} changes none of the {len(jobs)} selected job(s) (another setting "
                  "takes precedence, e.g. a backbone's own training settings or an overrides: entry)", file=sys.stderr)
    if args.dry_run:
        _print_dry_run(profile, jobs, settings, budget.describe())
        return 0
    from suite.run.tracking import Tracker

    # opened (and a new store migrated, its experiment created) here, before any --jobs worker opens it
    tracker = Tracker(args.tracking_uri, experiment=args.experiment or f"suite-{profile.name}")
    chosen_attacks = () if args.no_attack else tuple(args.attack) if args.attack else None  # None: the profile's
    options = JobOptions(force=args.force, attacks=chosen_attacks, query_budget=args.query_budget,
                         workers=budget.workers, attack_engine=args.attack_engine)
    parallel = min(budget.jobs, len(jobs))
    outcomes = _run_grid(jobs, tracker, options, parallel, args.verbose)
    results = [o.result for o in outcomes if o.result is not None]
    failures = []
    for o in outcomes:  # grid order
        if o.result is None:
            failures.append((o.job.label, o.error or "failed"))
        else:
            failures.extend((f"{o.job.label} attack", err) for err in o.result.attack_errors)
    attack_names = sorted({k.rsplit(".", 1)[0] for r in results for k in r.metrics if k.endswith(".aua")})
    accuracy_only = sorted({k.rsplit(".", 1)[0] for r in results for k in r.metrics
                            if k.endswith(".accuracy") and k != "clean_accuracy"})
    rows = []
    for r in results:
        row = [r.job.defense, r.job.dataset, r.job.backbone, r.job.seed, _fmt(r.metrics.get("clean_accuracy")),
               _fmt(r.metrics.get("mean_epoch_time_s"))]
        for a in attack_names:
            row.append("/".join(_fmt(r.metrics.get(f"{a}.{m}"), 1) for m in ("aua", "suc", "queries")))
        row.extend(_fmt(r.metrics.get(f"{a}.accuracy")) for a in accuracy_only)
        rows.append(row + ["trained earlier" if r.skipped else "trained", r.run_id])
    headers = ["defense", "dataset", "backbone", "seed", "Clean%", "s/epoch",
               *[f"{a} Aua/Suc/#Q" for a in attack_names], *[f"{a} Acc%" for a in accuracy_only], "status", "mlflow run"]
    print(tabulate(rows, headers=headers))
    print(f"tracking store: {tracker.tracking_uri} (experiment {tracker.experiment})")
    if failures:
        print(f"{len(failures)} job(s) failed: " + "; ".join(f"{label}: {msg}" for label, msg in failures), file=sys.stderr)
        return 1
    return 0


def _print_dry_run(profile: "Profile", jobs: Sequence["Job"], settings: Sequence["Setting"], budget: str) -> None:
    """The expanded grid, a row per job with its defense's settings other than the Config defaults
    (and, with --set, the settings that change the job)."""
    from tabulate import tabulate

    from suite.run.overrides import non_default_settings

    modified = f" modified by {' '.join(s.option for s in settings)}" if settings else ""
    print(f"profile {profile.name} v{profile.version}{modified}: {len(jobs)} job(s); {budget}")
    rows = []
    for j in jobs:
        row = [j.defense, j.dataset, j.backbone, j.seed, j.train.epochs, j.train.batch_size, j.train.lr,
               non_default_settings(j.defense, j.defense_config)]
        if settings:
            row.append(" ".join(o.split("=", 1)[0] for o in j.profile_overrides) or "-")
        rows.append(row)
    headers = ["defense", "dataset", "backbone", "seed", "epochs", "batch", "lr", "defense config (non-default)"]
    print(tabulate(rows, headers=headers + (["changed by --set"] if settings else [])))


def _run_grid(jobs: Sequence["Job"], tracker: "Tracker", options: JobOptions, parallel: int,
              verbose: bool) -> list[JobOutcome]:
    """Run the grid (``parallel`` jobs at once), printing one line as each job starts and ends;
    with ``--jobs`` > 1 also one progress bar over the jobs (the workers show none of their own)."""
    from suite.run.parallel import run_jobs

    total = len(jobs)
    bar = None
    if parallel > 1:
        from tqdm.auto import tqdm

        print(f"suite: running {total} jobs, {parallel} at once, each in its own process", file=sys.stderr, flush=True)
        bar = tqdm(total=total, desc=f"jobs ({parallel} at once)", unit="job", file=sys.stderr)

    def say(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_start(index: int, job: "Job") -> None:
        say(f"[{index + 1}/{total}] {job.label}")

    def on_finish(outcome: JobOutcome) -> None:
        where = f"[{outcome.index + 1}/{total}] {outcome.job.label}"
        if outcome.result is None:  # keep going: finished jobs are already logged
            say(f"suite: error: {outcome.job.label}: {outcome.error}")
            if verbose and outcome.detail:
                say(outcome.detail.rstrip())
        else:
            result = outcome.result
            status = "training skipped (identical finished job: config hash match)" if result.skipped else "done"
            say(f"{where}: {status}; run {result.run_id}")
        if bar is not None:
            bar.update(1)

    try:
        return run_jobs(jobs, tracker, options, parallel=parallel, verbose=verbose, on_start=on_start,
                        on_finish=on_finish)
    finally:
        if bar is not None:
            bar.close()


def _cmd_doctor(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from attacks import ATTACKS
    from attacks.resources import doctor_table

    requirements = {name: spec.requires for name, spec in ATTACKS.items()}
    rows = doctor_table(requirements)
    print(tabulate(rows, headers=["resource", "status", "source", "location", "needed by"]))
    missing = {r[0] for r in rows if r[1] == "missing"}
    runnable = [n for n, req in requirements.items() if not missing & set(req)]
    print(f"attacks runnable here: {', '.join(runnable) or 'none'}")
    print(f"attacks blocked by a missing resource: {', '.join(n for n in requirements if n not in runnable) or 'none'}")
    return 0


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cmd_pin(args: argparse.Namespace) -> int:
    from suite.data import DATASETS
    from suite.data.splits import load_test_split
    from suite.run.protocol import ATTACK_SET_DIR, pin_attack_set

    ATTACK_SET_DIR.mkdir(exist_ok=True)
    for name in args.dataset or [n for n, s in DATASETS.items() if not s.static_eval_for]:
        pinned = pin_attack_set(name, load_test_split(name), args.size, args.seed, check_committed=False)
        (ATTACK_SET_DIR / f"{name}.json").write_text(json.dumps(pinned.to_dict(), indent=0) + "\n", encoding="utf-8")
        print(f"{name}: {pinned.size} of {pinned.test_examples} test examples, sha256 {pinned.sha256}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="suite", description="Reproducibility benchmark for adversarial defenses of text classifiers")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per-epoch metrics")
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list registered components")
    p_list.add_argument("kind", nargs="?", choices=KINDS)
    p_list.set_defaults(func=_cmd_list)

    p_run = sub.add_parser(
        "run", help="train (and evaluate) defenses under a profile",
        epilog="Core budget: --jobs J runs J jobs of the grid at once, each in its own process with one torch "
               "thread (unless the profile sets train.cpu_threads), and each job attacks with --workers W "
               "processes; J x W may not exceed the cores this process may use "
               f"({available_cores()} here). Without --workers, W = max(1, cores // J). --workers changes only "
               "the wall time (the same records for any W); so does --jobs where the profile pins "
               "train.cpu_threads (the smoke profile does: a serial run otherwise uses torch's default thread "
               "count).")
    p_run.add_argument("--profile", default="smoke", help="profile name or YAML path (default: smoke)")
    p_run.add_argument("--defense", action="append", help="defense to run (repeatable; default: the profile's)")
    p_run.add_argument("--dataset", action="append", help="dataset (repeatable)")
    p_run.add_argument("--backbone", action="append", help="backbone (repeatable)")
    p_run.add_argument("--seed", action="append", type=SEED, help="seed (repeatable; default: the profile's)")
    p_run.add_argument("--set", action="append", type=_setting, metavar="KEY=VALUE",
                       help="change a setting of the profile (repeatable; the last one wins): a dotted path as the "
                            "YAML spells it, e.g. defenses.adv-aug.rounds=2, backbones.cnn.epochs=1, seeds=[0, 1]; "
                            "the value is YAML. The jobs it changes get their own config hash and record it "
                            "(profile_overrides)")
    p_run.add_argument("--all", action="store_true", help="run the profile's whole grid")
    p_run.add_argument("--dry-run", action="store_true", help="print the expanded job grid and exit")
    attack = p_run.add_mutually_exclusive_group()
    attack.add_argument("--attack", action="append", help="attack to run after training (repeatable; default: the profile's)")
    attack.add_argument("--no-attack", action="store_true", help="train only")
    p_run.add_argument("--query-budget", type=QUERY_BUDGET, help="maximum model queries per attacked example (default: unlimited)")
    p_run.add_argument("--jobs", type=JOBS, metavar="N",
                       help="run N jobs of the grid at once, each in its own process (default: 1, one after "
                            "another in this process); see the core budget below")
    p_run.add_argument("--workers", type=JOBS, metavar="N",
                       help="processes attacking one model's attack set in parallel (default: cores // --jobs, "
                            "at least 1); records and metrics are the same for any N")
    p_run.add_argument("--attack-engine", choices=ATTACK_ENGINES, default=DEFAULT_ATTACK_ENGINE,
                       help="run TextAttack recipes on the suite's fast engine (same records as stock TextAttack; "
                            "a recipe it does not cover falls back to stock with a one-line note) or on stock "
                            f"TextAttack (default: {DEFAULT_ATTACK_ENGINE})")
    p_run.add_argument("--force", action="store_true", help="re-train jobs that already finished")
    p_run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p_run.add_argument("--experiment", help="MLflow experiment name (default: suite-<profile>)")
    p_run.set_defaults(func=_cmd_run)

    p_doc = sub.add_parser("doctor", help="show which attack resources are available, from where, and who needs them")
    p_doc.set_defaults(func=_cmd_doctor)

    p_pin = sub.add_parser("pin-attack-sets", help="(re)write the committed attack-set pins")
    p_pin.add_argument("--dataset", action="append")
    p_pin.add_argument("--size", type=_bounded_int(1), default=1000)
    p_pin.add_argument("--seed", type=SEED, default=2024)
    p_pin.set_defaults(func=_cmd_pin)

    from leaderboard.cli import add_parser as add_leaderboard_parser

    add_leaderboard_parser(sub)  # suite leaderboard collect | build | show

    from suite.run.check import add_parser as add_check_parser

    add_check_parser(sub)  # suite check: fail when a reproduced number drifted
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from suite.run.console import configure_console

    configure_console(args.verbose)  # logging levels and warning filters; every --jobs worker does the same
    try:
        return int(args.func(args) or 0)
    except SuiteError as exc:
        print(f"suite: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("suite: interrupted; finished jobs are in the tracking store", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped (`suite list | head`): not an error, and no traceback at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured)
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
