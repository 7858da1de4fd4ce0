"""The static leaderboard site: an overview page and one page per dataset (Jinja2, autoescaped).

Everything is self-contained (inline CSS, a small inline table sorter, server-side SVG), so the
pages work from ``file://`` without any external asset. Every string from an entry is escaped by
Jinja2's autoescaping; the sorter only reads ``data-sort`` attributes and moves rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from leaderboard.entries import slug
from leaderboard.tolerance import DEVIATES, NO_PUBLISHED, NOT_COMPARABLE, REPRODUCED

TEMPLATES = Path(__file__).parent / "templates"
ATTACK_METRIC_ORDER = ("aua", "suc", "queries", "cosine", "euclidean")
METRIC_LABELS = {"clean": "Clean%", "aua": "Aua%", "suc": "Suc%", "queries": "#Query", "cosine": "cos",
                 "euclidean": "dist", "epoch_time": "s/epoch"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STATUS_CLASS = {REPRODUCED: "reproduced", DEVIATES: "deviates", NOT_COMPARABLE: "not-comparable",
                NO_PUBLISHED: "no-published"}
STATUS_MARK = {REPRODUCED: "\u2713", DEVIATES: "\u2717", NOT_COMPARABLE: "\u25cb", NO_PUBLISHED: "\u2013"}


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = fmt_number
    env.globals.update(status_class=STATUS_CLASS, status_mark=STATUS_MARK, labels=METRIC_LABELS)
    return env


def fmt_number(value: float | None, digits: int = 2) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def dataset_page(dataset: str) -> str:
    return f"dataset-{slug(dataset)}.html"


def _sort_key(stat: Mapping[str, Any] | None) -> str:
    return "" if not stat or stat.get("mean") is None else repr(stat["mean"])


def _row(entry: Mapping[str, Any], attack_columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    cells = [entry["metrics"].get("clean")]
    for attack, metric in attack_columns:
        cells.append(entry["attacks"].get(attack, {}).get("metrics", {}).get(metric))
    cells.append(entry["metrics"].get("epoch_time"))
    return {"entry": entry, "cells": [{"stat": c, "sort": _sort_key(c)} for c in cells],
            "json": f"entries/{entry['id']}.json", "config": f"entries/{entry['id']}.config.json"}


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    ticks: tuple[float, ...]


def _axis(values: Sequence[float], floor: float = 0.0, ceil: float = 100.0) -> Axis:
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1.0)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50) if span / s <= 6)
    lo = max(floor, math.floor((lo - span * 0.05) / step) * step)
    hi = min(ceil, math.ceil((hi + span * 0.05) / step) * step)
    if hi <= lo:
        hi = lo + step
    ticks = tuple(lo + i * step for i in range(int(round((hi - lo) / step)) + 1))
    return Axis(lo, hi, ticks)


def scatter(entries: Sequence[Mapping[str, Any]], width: int = 560, height: int = 380) -> dict[str, Any] | None:
    """Clean% (x) against Aua% (y) for every (entry, attack) with both; None if there is none."""
    points = []
    attacks = sorted({a for e in entries for a in e["attacks"]})
    for e in entries:
        clean = (e["metrics"].get("clean") or {}).get("mean")
        for attack in attacks:
            aua = (e["attacks"].get(attack, {}).get("metrics", {}).get("aua") or {}).get("mean")
            if clean is not None and aua is not None:
                points.append({"x": clean, "y": aua, "attack": attack, "entry": e})
    if not points:
        return None
    margin = {"l": 52, "r": 150, "t": 14, "b": 44}
    x_axis, y_axis = _axis([p["x"] for p in points]), _axis([p["y"] for p in points])
    plot_w, plot_h = width - margin["l"] - margin["r"], height - margin["t"] - margin["b"]

    def sx(v: float) -> float:
        return round(margin["l"] + (v - x_axis.lo) / (x_axis.hi - x_axis.lo) * plot_w, 2)

    def sy(v: float) -> float:
        return round(margin["t"] + plot_h - (v - y_axis.lo) / (y_axis.hi - y_axis.lo) * plot_h, 2)

    used = sorted({p["attack"] for p in points})
    colour = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(used)}
    return {
        "width": width, "height": height, "margin": margin, "plot_w": plot_w, "plot_h": plot_h,
        "x_ticks": [{"v": t, "px": sx(t)} for t in x_axis.ticks],
        "y_ticks": [{"v": t, "px": sy(t)} for t in y_axis.ticks],
        "points": [{**p, "cx": sx(p["x"]), "cy": sy(p["y"]), "colour": colour[p["attack"]]} for p in points],
        "legend": [{"attack": a, "colour": colour[a], "y": margin["t"] + 16 * i + 8} for i, a in enumerate(used)],
    }


def summarise(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of comparison statuses over all entries, and every judged comparison."""
    counts = {s: 0 for s in STATUS_CLASS}
    judged = []
    for e in entries:
        metric_sets = [("none", e["metrics"])] + [(a, info["metrics"]) for a, info in e["attacks"].items()]
        for attack, metrics in metric_sets:
            for metric, stat in sorted(metrics.items()):
                if "published" not in stat:
                    continue
                if not stat["published"]:
                    counts[NO_PUBLISHED] += 1
                for row in stat["published"]:
                    counts[row["status"]] += 1
                    if row["status"] in (REPRODUCED, DEVIATES):
                        judged.append({"entry": e, "attack": attack, "metric": metric, "stat": stat, "row": row})
    comparable = counts[REPRODUCED] + counts[DEVIATES]
    return {"counts": counts, "comparable": comparable, "reproduced": counts[REPRODUCED], "judged": judged}


def build_site(entries: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """Write index.html, one page per dataset and the entries' JSON (and config) under ``out``."""
    env = environment()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "entries"
    data_dir.mkdir(exist_ok=True)
    for e in entries:
        (data_dir / f"{e['id']}.json").write_text(
            json.dumps(e, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (data_dir / f"{e['id']}.config.json").write_text(
            json.dumps(e["config"], sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    datasets = sorted({e["dataset"] for e in entries})
    policies = sorted({json.dumps(e.get("tolerances", {}), sort_keys=True) for e in entries})
    common = {"datasets": [{"name": d, "page": dataset_page(d)} for d in datasets],
              "policies": [json.loads(p) for p in policies]}
    written = []
    for dataset in datasets:
        rows_in = [e for e in entries if e["dataset"] == dataset]
        attacks = sorted({a for e in rows_in for a in e["attacks"]})
        columns = [(a, m) for a in attacks for m in ATTACK_METRIC_ORDER
                   if any(m in e["attacks"].get(a, {}).get("metrics", {}) for e in rows_in)]
        page = env.get_template("dataset.html.j2").render(
            **common, title=f"{dataset} leaderboard", dataset=dataset, attack_columns=columns,
            rows=[_row(e, columns) for e in rows_in], scatter=scatter(rows_in), summary=summarise(rows_in))
        path = out / dataset_page(dataset)
        path.write_text(page, encoding="utf-8")
        written.append(path)
    index = env.get_template("index.html.j2").render(
        **common, title="Defense leaderboard", summary=summarise(entries), entries=entries,
        per_dataset=[{"name": d, "page": dataset_page(d), "n": sum(e["dataset"] == d for e in entries),
                      "summary": summarise([e for e in entries if e["dataset"] == d])} for d in datasets])
    (out / "index.html").write_text(index, encoding="utf-8")
    return [out / "index.html", *written]
