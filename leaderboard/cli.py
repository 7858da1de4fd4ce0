"""``suite leaderboard collect | build | show`` (wired into ``suite`` by suite/cli.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from suite.core.errors import SuiteError

DEFAULT_ENTRIES = "leaderboard/entries"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _cmd_collect(args: argparse.Namespace) -> int:
    from leaderboard.entries import build_entries, prune_entries, read_runs, write_entries
    from leaderboard.published import load_published
    from leaderboard.tolerance import STATUSES, load_policy

    policy = load_policy(args.tolerances)
    published = load_published()
    runs = []
    for uri in args.tracking_uri or [default_tracking_uri()]:
        found = read_runs(uri)
        print(f"{uri}: {len(found)} finished suite run(s)", file=sys.stderr)
        runs.extend(found)
    if not runs:
        print("no finished suite runs found; nothing written (run 'suite run' first or pass --tracking-uri)",
              file=sys.stderr)
        return 1
    entries = build_entries(runs, published, policy)
    paths = write_entries(entries, Path(args.out))
    removed = prune_entries(Path(args.out), paths) if args.prune else []
    for path in removed:
        print(f"removed {path} (not produced by this collect; --prune)", file=sys.stderr)
    totals = {s: sum(e["summary"][s] for e in entries) for s in STATUSES}
    excluded = sum(len(e["excluded_runs"]) for e in entries)
    print(f"{len(paths)} entr{'y' if len(paths) == 1 else 'ies'} written to {args.out} "
          f"({excluded} run(s) excluded, reasons in the entry files)"
          + (f"; {len(removed)} stale entr{'y' if len(removed) == 1 else 'ies'} removed" if args.prune else ""))
    print("published values beside reproduced ones: " + ", ".join(f"{totals[s]} {s}" for s in STATUSES)
          + f" (tolerances v{policy.version}{', provisional' if policy.provisional else ''})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from leaderboard.entries import load_entries
    from leaderboard.html import build_site

    source, out = Path(args.entries).resolve(), Path(args.out).resolve()
    for folder in (out, *out.parents):  # the site folder, and every folder it is created in
        if folder.exists() and not folder.is_dir():
            raise SuiteError(f"--out {args.out}: {folder} is a file, not a folder; choose a folder for the site "
                             "(it is created if missing)")
    if source in (out, out / "entries"):
        raise SuiteError(f"--out {args.out} would write the site into the entries folder {args.entries}; "
                         "choose another output folder")
    entries = load_entries(Path(args.entries))
    pages = build_site(entries, Path(args.out))
    print(f"{len(pages)} page(s) from {len(entries)} entries: open {pages[0]}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from leaderboard.entries import load_entries
    from leaderboard.show import render

    entries = load_entries(Path(args.entries))
    if args.profile:
        entries = [e for e in entries if e["profile"] in args.profile]
    print(render(entries, args.dataset, args.format), end="")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``leaderboard`` and its sub-commands on the ``suite`` sub-parser collection."""
    p = sub.add_parser("leaderboard", help="collect MLflow runs into entries, build the static site, show tables")
    lsub = p.add_subparsers(dest="leaderboard_command", required=True)

    c = lsub.add_parser("collect", help="aggregate finished runs into one JSON per (defense, dataset, backbone, profile)")
    c.add_argument("--tracking-uri", action="append",
                   help="MLflow store to read (repeatable; default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    c.add_argument("--out", default=DEFAULT_ENTRIES, help=f"entries folder (default: {DEFAULT_ENTRIES})")
    c.add_argument("--tolerances", help="comparison policy YAML (default: leaderboard/tolerances.yaml)")
    c.add_argument("--prune", action="store_true",
                   help="remove entry files in --out that this collect did not produce (each one is listed); "
                        "default: merge, never delete")
    c.set_defaults(func=_cmd_collect)

    b = lsub.add_parser("build", help="write the static HTML leaderboard")
    b.add_argument("--out", required=True, help="output folder for index.html and the dataset pages")
    b.add_argument("--entries", default=DEFAULT_ENTRIES, help=f"entries folder (default: {DEFAULT_ENTRIES})")
    b.set_defaults(func=_cmd_build)

    s = lsub.add_parser("show", help="print one dataset's leaderboard")
    s.add_argument("--dataset", required=True)
    s.add_argument("--format", choices=("md", "plain"), default="md")
    s.add_argument("--profile", action="append", help="only entries of this profile (repeatable)")
    s.add_argument("--entries", default=DEFAULT_ENTRIES, help=f"entries folder (default: {DEFAULT_ENTRIES})")
    s.set_defaults(func=_cmd_show)
