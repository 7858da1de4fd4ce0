"""Resumable attacks: a per-example JSONL cache (no pickle).

One file per (checkpoint sha256, attack config hash); one JSON line per finished example,
flushed and fsynced as soon as it is written, so a killed attack loses at most the example in
flight and a re-run attacks only the rest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


class AttackCache:
    def __init__(self, root: Path, checkpoint_sha256: str, attack_hash: str) -> None:
        self.path = root / checkpoint_sha256[:16] / f"{attack_hash}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished records by example id; a torn last line (killed mid-write) is ignored."""
        done: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["id"]] = rec
        return done

    def append(self, record: dict[str, Any]) -> None:
        torn = False
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"  # a line cut off by a kill: start a fresh one
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if torn else "") + json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.load().values())
