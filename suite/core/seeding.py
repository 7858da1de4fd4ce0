"""Seeding: python, numpy and torch with the protocol's determinism settings, and seeded
generators by purpose (one formula for every new random draw)."""
from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import torch


def deterministic_mode() -> None:
    """The protocol's determinism settings, for every path that runs a model (training, attacking
    a freshly trained or a reloaded checkpoint, resuming an attack in a new process).

    ``torch.use_deterministic_algorithms`` alone is not enough on CPU: oneDNN (mkldnn)
    convolutions gave run-to-run differences in the 8th digit of the loss (measured: 3
    distinct Kim-CNN losses in 8 identical runs), so oneDNN is switched off; with it off, 10 of
    10 runs were identical. Left on while attacking a reloaded checkpoint, it changed 10
    of 500 per-example PWWS records on trec/CNN (issue 10). Results still depend on the torch thread
    count, which the run records in environment.json. Idempotent; seeds nothing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.mkldnn.enabled = False
    warn_only = torch.cuda.is_available()
    if (not torch.are_deterministic_algorithms_enabled()
            or torch.is_deterministic_algorithms_warn_only_enabled() != warn_only):
        torch.use_deterministic_algorithms(True, warn_only=warn_only)  # imports torch._inductor: only when needed


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch and make CPU runs bit-for-bit repeatable (:func:`deterministic_mode`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    deterministic_mode()


def derive_seed(seed: int, purpose: str, *counters: int) -> int:
    """A 63-bit seed for one purpose: the first 8 bytes of sha256 of ``(seed, purpose, *counters)``.

    Draws for different purposes (``"shuffle"``, ``"mask-init"``, ...) or counters (epoch, step,
    example index) are independent of one another and of the order in which they are made, so
    adding a random draw somewhere never shifts another one.
    """
    key = json.dumps([int(seed), str(purpose), *(int(c) for c in counters)], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def generator(seed: int, purpose: str, *counters: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed` (``seed``, ``purpose``, ``counters``).

    New code draws its randomness here. The two older per-step formulas are kept as they are so
    that no existing number moves: ``defenses.perturbation.step_generator`` and Flooding-X's
    measurement sub-batches seed with ``seed * 1_000_003 + counter`` (step, epoch).
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, *counters))
