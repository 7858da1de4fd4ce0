"""The one record type every dataset is turned into."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labelled example.

    ``id`` is stable across runs: ``<source split>/<row index in that split's file>``, so a
    pinned attack set stays valid as long as the mirror file's sha256 does.
    ``texts`` has one element for single-sentence tasks and two for pair tasks (QNLI).
    """

    id: str
    texts: tuple[str, ...]
    label: int
