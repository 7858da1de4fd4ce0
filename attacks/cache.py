"""Resumable attacks: a per-example JSONL cache (no pickle).

One file per (checkpoint sha256, attack config hash); one JSON line per finished example,
flushed as soon as it is written, so a killed attack loses at most the example in flight and a
re-run attacks only the rest; fsynced at most once a second (:data:`SYNC_EVERY_S`), so an OS
crash or power cut loses at most that second's examples, which the re-run attacks again.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from attacks.metrics import RESULT_TYPES

log = logging.getLogger(__name__)


def _problem(rec: Any) -> str | None:
    """Why ``rec`` is not a finished example's record (None: it is one)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record"
    if not isinstance(rec.get("id"), str):
        return "no example 'id'"
    if rec.get("result") not in RESULT_TYPES:
        return f"'result' is {rec.get('result')!r}, not one of {', '.join(RESULT_TYPES)}"
    queries = rec.get("queries")
    if isinstance(queries, bool) or not isinstance(queries, (int, float)):
        return "no number of 'queries'"
    return None


#: fsync the cache at most this often (an fsync per record cost ~5 ms here, a quarter of an engine PWWS example)
SYNC_EVERY_S = 1.0


class AttackCache:
    def __init__(self, root: Path, checkpoint_sha256: str, attack_hash: str) -> None:
        self.path = root / checkpoint_sha256[:16] / f"{attack_hash}.jsonl"
        self._synced = 0.0  # time.monotonic() of the last fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished records by example id.

        A line that is not a record (not UTF-8, not JSON, not an object with an ``id``, a
        ``result`` and ``queries``) is skipped with a warning naming the file and line: its
        example is attacked again. A torn last line (a write killed mid-line) is expected and
        only logged at INFO.
        """
        done: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return done
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            torn = lineno == len(lines)  # no newline after it: the write was cut off
            try:
                rec: Any = json.loads(raw.decode("utf-8"))
                problem = _problem(rec)
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 (byte {exc.start})"
            except json.JSONDecodeError as exc:
                problem = f"not JSON ({exc.msg})"
            if problem is None:
                done[rec["id"]] = rec
            elif torn:
                log.info("%s: line %d was cut off mid-write (%s); its example is attacked again",
                         self.path, lineno, problem)
            else:
                log.warning("%s: line %d is skipped (%s); its example is attacked again", self.path, lineno, problem)
        return done

    def append(self, record: dict[str, Any]) -> None:
        torn = False
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"  # a line cut off by a kill: start a fresh one
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if torn else "") + json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()  # a killed process loses nothing written before the kill
            now = time.monotonic()
            if now - self._synced >= SYNC_EVERY_S:  # an OS crash or power cut: at most the last second
                os.fsync(fh.fileno())
                self._synced = now

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.load().values())
