"""The published-results registry: every numeric results table of the five papers, one record per number.

Each paper has one YAML file in ``leaderboard/published/`` (named after its citation key) that
transcribes its results tables as printed: a table block lists its ``columns`` and ``rows`` as the
paper prints them, and every cell is the exact printed text (``"84.18"``, ``"88.99 (-0.12)"``).
Loading expands each cell into one :class:`PublishedResult` — the row's and the column's fields
(dataset, backbone, defense, attacks, metric, settings) merged, the printed text parsed into
``value`` / ``std`` / ``delta`` — and validates every record. A file also holds the paper's
``citation``, ``mapping_notes`` (how the paper's names were mapped to suite names) and
``protocol_facts`` (hyper-parameter tables and settings, each with its table / section reference);
:func:`load_paper_info` returns those.

Names follow the suite's registries (datasets, backbones, attacks; defenses in
:data:`KNOWN_DEFENSES`); anything the suite does not have is prefixed ``paper:`` so it never
matches a suite run by accident. A record is identified by :meth:`PublishedResult.key`, which
includes ``settings`` (e.g. WETAR's static and dynamic variants differ only there).

Every problem (unknown key, missing field, unknown metric, a cell that is not a number) raises a
:class:`~suite.core.errors.SuiteError` naming the file and the record. YAML is read with
``yaml.safe_load`` only.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from suite.core.errors import SuiteError

PUBLISHED_DIR = Path(__file__).resolve().with_name("published")
PAPER_PREFIX = "paper:"

METRICS: dict[str, str] = {
    "clean": "accuracy (%) on the clean evaluation split (Clean%, 'standard accuracy', 'Acc.')",
    "clean_dev": "accuracy (%) on the clean validation (dev) split, reported next to a test accuracy",
    "aua": "accuracy (%) under attack: after-attack / robust accuracy (Aua%, AA, RA); for a static "
           "adversarial set (AdvGLUE) the accuracy on that set, for k-PGD the accuracy under it",
    "suc": "attack success rate (%): successful attacks / attacked examples (Suc%)",
    "queries": "mean number of model queries per attacked example (#Query)",
    "epoch_time": "wall-clock time of one training epoch (unit in `unit`)",
    "kendall_tau": "Kendall's tau rank correlation between the interpretations of original/adversarial pairs",
    "topk_intersection": "fraction of the top-k features shared by the interpretations of "
                         "original/adversarial pairs (k in settings)",
    "cosine": "mean cosine similarity between clean and adversarial sentence representations",
    "euclidean": "mean Euclidean distance between clean and adversarial sentence representations",
    "pearson_r": "Pearson correlation coefficient r (the correlated quantities in settings)",
    "p_value": "p-value of a Pearson correlation (the correlated quantities in settings)",
    "precision": "precision (%) of the positive class",
    "recall": "recall (%) of the positive class",
    "f1": "F1 score (%) of the positive class",
    "num_parameters": "number of trainable parameters of the model",
}
CLEAN_METRICS = frozenset({"clean", "clean_dev"})  # measured without an attack: eval_attack must be "none"
ATTACK_METRICS = frozenset({"aua", "suc", "queries"})  # need an attack: eval_attack must not be "none"

FLAGS: dict[str, str] = {
    "garbled": "the text extraction garbled this cell's row or column labels; the placement was "
               "inferred (the note says how)",
    "inferred": "a field of this record is not printed with the table but inferred from the text "
                "(the note says which and why)",
    "inconsistent": "the printed value disagrees with another printed number of the paper "
                    "(the note says which); transcribed as printed",
}

KNOWN_DEFENSES: frozenset[str] = frozenset({
    "finetune", "pgd", "freelb", "freelb++", "tavat", "trades", "smart", "infobert", "flooding",
    "flooding-x", "pgd+adaptive", "freelb+adaptive", "tavat+adaptive", "flat", "wetar-s", "wetar-d", "carl",
    "rar", "adv-aug", "ada", "robust-instances+flooding", "robust-instances+label-smoothing",
})

RECORD_FIELDS = ("dataset", "backbone", "defense", "train_attack", "eval_attack", "metric")
OPTIONAL_FIELDS = ("unit", "settings", "flags", "note")
_PART_KEYS = frozenset(RECORD_FIELDS + OPTIONAL_FIELDS)
_FILE_KEYS = frozenset({"paper", "citation", "source_text", "mapping_notes", "protocol_facts", "tables"})
_FILE_REQUIRED = ("paper", "citation", "protocol_facts", "tables")
_CITATION_KEYS = frozenset({"title", "authors", "venue", "year", "note"})
_TABLE_KEYS = frozenset({"table", "caption", "note", "flags", "defaults", "columns", "rows"})
_CELL_KEYS = frozenset({"text", "flags", "note", "settings"})
_NUMBER = r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
_VALUE_TEXT = re.compile(rf"^(?P<value>{_NUMBER})(?:\s*±\s*(?P<std>\d+(?:\.\d+)?))?"
                         rf"(?:\s*\((?P<delta>[+-]\d+(?:\.\d+)?)\))?$")
_PAPER_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_TABLE_NAME = re.compile(r"^Table [0-9A-Z]+$")


@dataclass(frozen=True)
class PublishedResult:
    """One published number: where it is printed, what it measures, and the exact printed text.

    ``value`` is the printed number (percent stays percent); ``value_text`` the printed cell;
    ``std`` a printed ±; ``delta`` a printed difference in parentheses (e.g. Adaptive AT's
    "+Ours" rows, CARL/RAR's gains over FreeLB). ``flags`` see :data:`FLAGS`.
    """

    paper: str
    table: str
    dataset: str
    backbone: str
    defense: str
    train_attack: str | None
    eval_attack: str
    metric: str
    value: float
    value_text: str
    std: float | None = None
    delta: float | None = None
    unit: str | None = None
    flags: tuple[str, ...] = ()
    note: str | None = None
    settings: Mapping[str, Any] | None = field(default=None, hash=False)
    caption: str | None = None
    row_label: str | None = None
    column_label: str | None = None
    position: tuple[int, int] | None = None  # (row, column) of the cell in the transcribed table, 1-based

    def key(self) -> tuple[Any, ...]:
        """What a reproduced number must match: names, metric and settings (sorted)."""
        settings = tuple(sorted((k, repr(v)) for k, v in (self.settings or {}).items()))
        return (self.dataset, self.backbone, self.defense, self.train_attack, self.eval_attack,
                self.metric, settings)


@dataclass(frozen=True)
class PaperInfo:
    """A paper's citation, name-mapping notes and protocol facts (hyper-parameters, splits)."""

    paper: str
    citation: Mapping[str, Any] = field(hash=False)
    protocol_facts: Mapping[str, Any] = field(hash=False)
    mapping_notes: tuple[str, ...] = ()
    source_text: str | None = None
    path: str = ""


def _fail(where: str, message: str) -> SuiteError:
    return SuiteError(f"{where}: {message}")


def _check_keys(where: str, data: Any, allowed: frozenset[str], required: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise _fail(where, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(map(repr, missing))}")


def _as_list(where: str, value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"{what} must be a string or a list of strings")
    return value


def parse_value_text(text: str) -> tuple[float, float | None, float | None]:
    """``"91.2±0.3"`` -> (91.2, 0.3, None); ``"88.99 (-0.12)"`` -> (88.99, None, -0.12)."""
    match = _VALUE_TEXT.match(text.strip())
    if match is None:
        raise ValueError(text)
    std, delta = match.group("std"), match.group("delta")
    return float(match.group("value")), float(std) if std else None, float(delta) if delta else None


def _merge(where: str, base: dict[str, Any], part: dict[str, Any], exclusive: set[str]) -> None:
    """Add ``part``'s fields to ``base``; a plain field set twice among ``exclusive`` sources is an error."""
    if part.get("flags") and not part.get("note"):
        raise _fail(where, "a flag needs a note beside it that says why")
    for key, value in part.items():
        if key == "label" or key == "cells" or key == "text":
            continue
        if key == "flags":
            base["flags"] = list(dict.fromkeys(base.get("flags", []) + _as_list(where, value, "flags")))
        elif key == "note":
            if value is not None and not isinstance(value, str):
                raise _fail(where, "note must be a string")
            base["notes"] = base.get("notes", []) + ([value] if value else [])
        elif key == "settings":
            if not isinstance(value, dict):
                raise _fail(where, "settings must be a mapping")
            settings = dict(base.get("settings") or {})
            clash = sorted(k for k in value if k in settings and settings[k] != value[k])
            if clash:
                raise _fail(where, f"settings {', '.join(clash)} set twice with different values")
            settings.update(value)
            base["settings"] = settings
        else:
            if key in exclusive and key in base and base[key] != part[key]:
                raise _fail(where, f"field {key!r} is set by both the column and the row")
            base[key] = value
            exclusive.add(key)


def _record(where: str, paper: str, table: dict[str, Any], column: dict[str, Any], row: dict[str, Any],
            cell: Any, position: tuple[int, int]) -> PublishedResult:
    fields: dict[str, Any] = {}
    _merge(where, fields, {k: v for k, v in table.items() if k in ("flags", "note")}, set())
    _merge(where, fields, table.get("defaults") or {}, set())
    exclusive: set[str] = set()
    _merge(where, fields, column, exclusive)
    _merge(where, fields, row, exclusive)
    if isinstance(cell, dict):
        _check_keys(where, cell, _CELL_KEYS, ("text",))
        _merge(where, fields, cell, set())
        text = cell["text"]
    else:
        text = cell
    if not isinstance(text, str):
        raise _fail(where, f"cell {text!r} must be a quoted string (the exact printed text, e.g. \"84.40\")")
    missing = [k for k in RECORD_FIELDS if k not in fields]
    if missing:
        raise _fail(where, f"missing field(s) {', '.join(missing)} (set them in defaults, the column or the row)")
    metric = fields["metric"]
    if metric not in METRICS:
        raise _fail(where, f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    for name in ("dataset", "backbone", "defense", "eval_attack"):
        if not isinstance(fields[name], str) or not fields[name]:
            raise _fail(where, f"{name} must be a non-empty string")
    if fields["train_attack"] is not None and not isinstance(fields["train_attack"], str):
        raise _fail(where, "train_attack must be an attack name or null")
    defense = fields["defense"]
    if defense not in KNOWN_DEFENSES and not defense.startswith(PAPER_PREFIX):
        raise _fail(where, f"defense {defense!r} is neither in KNOWN_DEFENSES nor prefixed {PAPER_PREFIX!r}")
    if metric in CLEAN_METRICS and fields["eval_attack"] != "none":
        raise _fail(where, f"metric {metric!r} is measured without an attack: eval_attack must be 'none'")
    if metric in ATTACK_METRICS and fields["eval_attack"] == "none":
        raise _fail(where, f"metric {metric!r} needs an attack: eval_attack must not be 'none'")
    if metric == "epoch_time" and not fields.get("unit"):
        raise _fail(where, "metric 'epoch_time' needs a unit")
    unknown_flags = sorted(set(fields.get("flags", [])) - set(FLAGS))
    if unknown_flags:
        raise _fail(where, f"unknown flag(s) {', '.join(unknown_flags)} (known: {', '.join(FLAGS)})")
    try:
        value, std, delta = parse_value_text(text)
    except ValueError:
        raise _fail(where, f"value {text!r} is not a number as printed "
                           f"(expected e.g. '84.18', '91.2±0.3' or '88.99 (-0.12)')") from None
    return PublishedResult(
        paper=paper, table=table["table"], dataset=fields["dataset"], backbone=fields["backbone"],
        defense=defense, train_attack=fields["train_attack"], eval_attack=fields["eval_attack"],
        metric=metric, value=value, value_text=text, std=std, delta=delta, unit=fields.get("unit"),
        flags=tuple(fields.get("flags", [])), note="; ".join(fields.get("notes", [])) or None,
        settings=fields.get("settings"), caption=table.get("caption"),
        row_label=str(row["label"]), column_label=str(column["label"]), position=position,
    )


def _table_records(path: str, index: int, paper: str, table: Any) -> list[PublishedResult]:
    where = f"{path}: table block {index}"
    _check_keys(where, table, _TABLE_KEYS, ("table", "columns", "rows"))
    name = table["table"]
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise _fail(where, f"table name {name!r} must be as printed, e.g. 'Table 3'")
    where = f"{path}: {name}"
    defaults = table.get("defaults") or {}
    _check_keys(f"{where} defaults", defaults, _PART_KEYS)
    columns, rows = table["columns"], table["rows"]
    if not isinstance(columns, list) or not columns or not isinstance(rows, list) or not rows:
        raise _fail(where, "columns and rows must be non-empty lists")
    for j, column in enumerate(columns, 1):
        _check_keys(f"{where}, column {j}", column, _PART_KEYS | {"label"}, ("label",))
    records = []
    for i, row in enumerate(rows, 1):
        label = row.get("label") if isinstance(row, dict) else None
        row_where = f"{where}, row {i} {label!r}"
        _check_keys(row_where, row, _PART_KEYS | {"label", "cells"}, ("label", "cells"))
        cells = row["cells"]
        if not isinstance(cells, list) or len(cells) != len(columns):
            count = len(cells) if isinstance(cells, list) else "no list of"
            raise _fail(row_where, f"{count} cells for {len(columns)} columns")
        for j, (column, cell) in enumerate(zip(columns, cells), 1):
            records.append(_record(f"{row_where}, column {j} {column['label']!r}", paper, table, column, row, cell,
                                   (i, j)))
    return records


def _load_file(path: Path) -> tuple[PaperInfo, list[PublishedResult]]:
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise _fail(f"{where}{line}", f"not valid YAML ({getattr(error, 'problem', None) or error})") from None
    _check_keys(where, data, _FILE_KEYS, _FILE_REQUIRED)
    paper = data["paper"]
    if not isinstance(paper, str) or not _PAPER_KEY.match(paper):
        raise _fail(where, f"paper key {paper!r} must be lower-case letters, digits and underscores")
    if path.stem != paper:
        raise _fail(where, f"file name must be the paper key: {paper}.yaml")
    _check_keys(f"{where}: citation", data["citation"], _CITATION_KEYS, ("title", "authors", "venue", "year"))
    facts = data["protocol_facts"]
    if not isinstance(facts, dict) or not facts:
        raise _fail(f"{where}: protocol_facts", "must be a non-empty mapping")
    for name, fact in facts.items():
        if not isinstance(fact, dict) or not isinstance(fact.get("ref"), str):
            raise _fail(f"{where}: protocol_facts.{name}", "each fact must be a mapping with a 'ref' (table or section)")
    tables = data["tables"]
    if not isinstance(tables, list) or not tables:
        raise _fail(f"{where}: tables", "must be a non-empty list")
    records: list[PublishedResult] = []
    seen: set[str] = set()
    for k, table in enumerate(tables, 1):
        table_records = _table_records(where, k, paper, table)
        name = table_records[0].table
        if name in seen:
            raise _fail(f"{where}: {name}", "table listed twice")
        seen.add(name)
        records.extend(table_records)
    info = PaperInfo(paper=paper, citation=data["citation"], protocol_facts=facts,
                     mapping_notes=tuple(_as_list(f"{where}: mapping_notes", data.get("mapping_notes"), "mapping_notes")),
                     source_text=data.get("source_text"), path=where)
    return info, records


@lru_cache(maxsize=8)
def _load_all(directory: str) -> tuple[dict[str, PaperInfo], tuple[PublishedResult, ...]]:
    folder = Path(directory)
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise SuiteError(f"{folder}: no published-results YAML files (expected one <paper>.yaml per paper)")
    infos: dict[str, PaperInfo] = {}
    records: list[PublishedResult] = []
    for path in paths:
        info, file_records = _load_file(path)
        if info.paper in infos:
            raise _fail(str(path), f"paper key {info.paper!r} also used by {infos[info.paper].path}")
        infos[info.paper] = info
        records.extend(file_records)
    return infos, tuple(records)


def _select(paper: str | None, directory: Path | str | None) -> tuple[dict[str, PaperInfo], list[PublishedResult]]:
    infos, records = _load_all(str(Path(directory or PUBLISHED_DIR).resolve()))
    if paper is None:
        return infos, list(records)
    if paper not in infos:
        raise SuiteError(f"unknown paper {paper!r} in the published-results registry (known: {', '.join(sorted(infos))})")
    return {paper: infos[paper]}, [r for r in records if r.paper == paper]


def load_published(paper: str | None = None, directory: Path | str | None = None) -> list[PublishedResult]:
    """All validated published records (of one ``paper`` if given), in file and table order.

    Files are read once per process; every call returns fresh ``settings`` dicts, so a caller
    that edits one does not change the cached registry.
    """
    return [r if r.settings is None else replace(r, settings=dict(r.settings)) for r in _select(paper, directory)[1]]


def load_paper_info(paper: str | None = None, directory: Path | str | None = None) -> dict[str, PaperInfo]:
    """Citation, mapping notes and protocol facts per paper key (deep copies)."""
    return copy.deepcopy(_select(paper, directory)[0])


def table_counts(paper: str | None = None, directory: Path | str | None = None) -> dict[tuple[str, str], int]:
    """Number of records per (paper, table)."""
    counts: dict[tuple[str, str], int] = {}
    for record in load_published(paper, directory):
        counts[(record.paper, record.table)] = counts.get((record.paper, record.table), 0) + 1
    return counts
