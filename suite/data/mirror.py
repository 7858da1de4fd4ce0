"""Reading the offline mirror: ``<SUITE_DATA_DIR>/<name>/<split>.jsonl.gz`` + ``MANIFEST.json``.

Every file is checked against the sha256 its MANIFEST records before it is used.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

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
    """The dataset mirror: ``$SUITE_DATA_DIR``, else ``../shared/datasets`` if it exists.

    A ``SUITE_DATA_DIR`` that is not a directory is an error (never a silent fall-back to the hub).
    """
    root = _default_dir("SUITE_DATA_DIR", "datasets")
    if root is not None and os.environ.get("SUITE_DATA_DIR") and not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise MissingDataError(
            f"SUITE_DATA_DIR={os.environ['SUITE_DATA_DIR']} {state}; point it at the dataset mirror (the folder "
            "with one sub-folder per dataset, e.g. ../shared/datasets), or unset it to load from the hub"
        )
    return root


def resources_dir() -> Path | None:
    """The resource mirror: ``$SUITE_RESOURCES_DIR``, else ``../shared/resources`` if it exists."""
    return _default_dir("SUITE_RESOURCES_DIR", "resources")


@dataclass(frozen=True)
class MirrorFile:
    path: Path
    sha256: str
    rows: int | None


REBUILD = ("its sha256 matches the MANIFEST, so the mirror was built from a bad copy: rebuild this file "
           "from the source, or point SUITE_DATA_DIR at an intact mirror")


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = folder / "MANIFEST.json"
    if not manifest.is_file():
        raise MissingDataError(
            f"no MANIFEST.json in {folder}: point SUITE_DATA_DIR (or SUITE_RESOURCES_DIR) at the "
            "mirror folder that holds one sub-folder per dataset"
        )
    fix = "restore it from an intact mirror (or re-download the mirror)"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{manifest}: not UTF-8 text (byte {exc.start}); {fix}") from None
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{manifest}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                             f"{fix}") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{manifest}: must be a JSON object with 'splits' (and 'sha256'), got "
                             f"{type(data).__name__}; {fix}")
    return data


def mirror_splits(folder: Path) -> dict[str, MirrorFile]:
    """Map split name -> file and expected sha256, for both MANIFEST layouts in the mirror.

    Layout A (most datasets): ``splits: {name: {file, rows, sha256}}``.
    Layout B (advglue): ``splits: {name: rows}`` and ``sha256: {file: digest}``.
    """
    manifest = read_manifest(folder)
    where = folder / "MANIFEST.json"
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        raise IntegrityError(f"{where}: 'splits' must map split names to files, got {splits!r}; "
                             "restore it from an intact mirror")
    out: dict[str, MirrorFile] = {}
    for name, info in splits.items():
        try:
            if isinstance(info, dict):
                out[name] = MirrorFile(folder / info["file"], str(info["sha256"]), info.get("rows"))
            else:
                file = f"{name}.jsonl.gz"
                out[name] = MirrorFile(folder / file, str(manifest["sha256"][file]), int(info))
        except (KeyError, TypeError, ValueError) as exc:
            missing = f"its '{exc.args[0]}'" if isinstance(exc, KeyError) else f"a valid entry ({exc})"
            raise IntegrityError(f"{where}: split '{name}' lacks {missing}; each split needs a file, its rows and "
                                 "its sha256: restore the MANIFEST from an intact mirror") from None
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


def iter_jsonl_gz(file: MirrorFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of every non-blank line of a verified mirror file.

    A file whose sha256 matches but whose content is bad (truncated or not gzip, a line that is
    not UTF-8 or not a JSON object) is an :class:`IntegrityError` naming the file and line.
    """
    verify(file)
    lineno = 0
    try:
        with gzip.open(file.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise IntegrityError(f"{file.path}: line {lineno} is not UTF-8 (byte {exc.start} of the line); "
                                         f"{REBUILD}") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise IntegrityError(f"{file.path}: line {lineno} is not valid JSON ({exc.msg}); {REBUILD}") from None
                if not isinstance(row, dict):
                    raise IntegrityError(f"{file.path}: line {lineno} is not a JSON object (a row with text and "
                                         f"label), got {type(row).__name__}; {REBUILD}")
                yield lineno, row
    except (EOFError, OSError, zlib.error) as exc:  # truncated, or not gzip at all
        after = f" after line {lineno}" if lineno else ""
        raise IntegrityError(f"{file.path}: not a complete gzip file ({exc}{after}); {REBUILD}") from None


def read_jsonl_gz(file: MirrorFile) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl_gz(file)]
