"""``suite leaderboard show``: one dataset's leaderboard as a Markdown or plain-text table."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tabulate import tabulate

from leaderboard.html import ATTACK_METRIC_ORDER, METRIC_LABELS
from leaderboard.tolerance import NO_PUBLISHED
from suite.core.errors import SuiteError

FORMATS = {"md": "github", "plain": "plain"}


def _stat(stat: Mapping[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean']:.2f}"
    return text + (f"±{stat['std']:.2f}" if stat.get("std") is not None else "")


def _metric_sets(entry: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    out = [("none", m, s) for m, s in sorted(entry["metrics"].items())]
    for attack, info in sorted(entry["attacks"].items()):
        out.extend((attack, m, s) for m, s in sorted(info["metrics"].items()))
    return out


def render(entries: Sequence[Mapping[str, Any]], dataset: str, fmt: str = "md") -> str:
    """The results table of ``dataset`` followed by the table of published values beside them."""
    if fmt not in FORMATS:
        raise SuiteError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    rows_in = [e for e in entries if e["dataset"] == dataset]
    if not rows_in:
        known = sorted({e["dataset"] for e in entries})
        raise SuiteError(f"no leaderboard entries for dataset '{dataset}' (entries exist for: {', '.join(known)})")
    attacks = sorted({a for e in rows_in for a in e["attacks"]})
    columns = [(a, m) for a in attacks for m in ATTACK_METRIC_ORDER
               if any(m in e["attacks"].get(a, {}).get("metrics", {}) for e in rows_in)]
    headers = ["defense", "backbone", "profile", "seeds", METRIC_LABELS["clean"],
               *[f"{a} {METRIC_LABELS[m]}" for a, m in columns], METRIC_LABELS["epoch_time"], "runs"]
    rows = []
    for e in rows_in:
        defense = e["defense"] + (f" (adv. {e['train_attack']})" if e.get("train_attack") else "")
        row = [defense, e["backbone"], e["profile"], ",".join(str(s) for s in e["seeds"]), _stat(e["metrics"].get("clean"))]
        row += [_stat(e["attacks"].get(a, {}).get("metrics", {}).get(m)) for a, m in columns]
        row += [_stat(e["metrics"].get("epoch_time")), " ".join(r["run_id"][:8] for r in e["runs"])]
        rows.append(row)
    tablefmt = FORMATS[fmt]
    parts = [tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)]

    published = []
    for e in rows_in:
        for attack, metric, stat in _metric_sets(e):
            if "published" not in stat:
                continue
            label = METRIC_LABELS.get(metric, metric) + ("" if attack == "none" else f" {attack}")
            for p in stat["published"]:
                detail = f"{p['diff']:+.2f} (tol {p['tolerance']})" if p["diff"] is not None else p["reason"]
                published.append([e["defense"], e["backbone"], e["profile"], label, _stat(stat), p["value_text"],
                                  f"{p['paper']} {p['table']}" + (f" [{p['backbone']}]" if p["backbone"] != e["backbone"] else ""),
                                  p["status"], detail])
            if not stat["published"]:
                published.append([e["defense"], e["backbone"], e["profile"], label, _stat(stat), "-", "-", NO_PUBLISHED, ""])
    parts.append(tabulate(published, headers=["defense", "backbone", "profile", "metric", "reproduced", "published",
                                              "source", "status", "difference / reason"],
                          tablefmt=tablefmt, disable_numparse=True))
    heading = "## " if fmt == "md" else ""
    return f"{heading}{dataset}\n\n{parts[0]}\n\n{heading}published values\n\n{parts[1]}\n"
