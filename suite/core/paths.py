"""Where the suite keeps its caches (prepared resources, attack results)."""
from __future__ import annotations

import os
from pathlib import Path


def suite_cache_dir() -> Path:
    """``$SUITE_CACHE_DIR``, else ``~/.cache/suite``. XDG_CACHE_HOME is not used because TextAttack rewrites it."""
    value = os.environ.get("SUITE_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "suite"


def attack_cache_root() -> Path:
    """The per-example attack results cache (JSONL per checkpoint and attack configuration)."""
    return suite_cache_dir() / "attacks"
