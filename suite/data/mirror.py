"""Reading the offline mirror: ``<SUITE_DATA_DIR>/<name>/<split>.jsonl.gz`` + ``MANIFEST.json``.

Every file is checked against the sha256 its MANIFEST records before it is used.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from suite.core.errors import IntegrityError, MissingDataError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _default_dir(env_var: str, sub: str) -> Path | None:
    value = os.environ.get(env_var)
    if value:
        return Path(value).expanduser().resolve()
    for base in (Path.cwd(), PACKAGE_ROOT):
        candidate = base.parent / "shared" / sub
        if candidate.is_dir():
            return candidate.resolve()
    return None


def data_dir() -> Path | None:
    """The dataset mirror: ``$SUITE_DATA_DIR``, else ``../shared/datasets`` if it exists."""
    return _default_dir("SUITE_DATA_DIR", "datasets")


def resources_dir() -> Path | None:
    """The resource mirror: ``$SUITE_RESOURCES_DIR``, else ``../shared/resources`` if it exists."""
    return _default_dir("SUITE_RESOURCES_DIR", "resources")


@dataclass(frozen=True)
class MirrorFile:
    path: Path
    sha256: str
    rows: int | None


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = folder / "MANIFEST.json"
    if not manifest.is_file():
        raise MissingDataError(
            f"no MANIFEST.json in {folder}: point SUITE_DATA_DIR (or SUITE_RESOURCES_DIR) at the "
            "mirror folder that holds one sub-folder per dataset"
        )
    with manifest.open(encoding="utf-8") as fh:
        return json.load(fh)


def mirror_splits(folder: Path) -> dict[str, MirrorFile]:
    """Map split name -> file and expected sha256, for both MANIFEST layouts in the mirror.

    Layout A (most datasets): ``splits: {name: {file, rows, sha256}}``.
    Layout B (advglue): ``splits: {name: rows}`` and ``sha256: {file: digest}``.
    """
    manifest = read_manifest(folder)
    out: dict[str, MirrorFile] = {}
    for name, info in manifest.get("splits", {}).items():
        if isinstance(info, dict):
            out[name] = MirrorFile(folder / info["file"], info["sha256"], info.get("rows"))
        else:
            file = f"{name}.jsonl.gz"
            out[name] = MirrorFile(folder / file, manifest["sha256"][file], int(info))
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=64)
def _verified(path: Path, mtime_ns: int, size: int, expected: str) -> str:
    actual = sha256_of(path)
    if actual != expected:
        raise IntegrityError(
            f"sha256 mismatch for {path}: MANIFEST says {expected[:12]}…, file is {actual[:12]}…; "
            "the mirror copy is corrupt or was edited — restore it, or point SUITE_DATA_DIR at an "
            "intact mirror"
        )
    return actual


def verify(file: MirrorFile) -> str:
    """Check ``file`` against its MANIFEST digest (once per process and file version)."""
    if not file.path.is_file():
        raise MissingDataError(f"mirror file {file.path} is listed in its MANIFEST but missing")
    stat = file.path.stat()
    return _verified(file.path, stat.st_mtime_ns, stat.st_size, file.sha256)


def read_jsonl_gz(file: MirrorFile) -> list[dict[str, Any]]:
    verify(file)
    with gzip.open(file.path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
