"""GloVe 6B 50-d vectors from the resource mirror (``$SUITE_RESOURCES_DIR/glove_6B_50d``).

FLAT (§4 "Models") initialises the CNN/LSTM with 300-d word2vec (Mikolov et al. 2013); those
vectors are not available offline, so the suite substitutes GloVe 6B 50-d and records it.
"""
from __future__ import annotations

import gzip
from functools import lru_cache

import numpy as np

from suite.data import mirror
from suite.core.errors import MissingDataError

GLOVE_FOLDER = "glove_6B_50d"


@lru_cache(maxsize=1)
def load_glove() -> tuple[dict[str, int], np.ndarray]:
    """(word -> row, float32 matrix [400000, 50]), sha256-verified against the MANIFEST."""
    root = mirror.resources_dir()
    folder = root / GLOVE_FOLDER if root else None
    if folder is None or not folder.is_dir():
        raise MissingDataError(
            f"GloVe 6B 50d not found (looked for {folder or '$SUITE_RESOURCES_DIR/' + GLOVE_FOLDER}); "
            "set SUITE_RESOURCES_DIR to the resource mirror (e.g. ../shared/resources)"
        )
    manifest = mirror.read_manifest(folder)
    files = {name: mirror.MirrorFile(folder / name, info["sha256"], None) for name, info in manifest["files"].items()}
    for f in files.values():
        mirror.verify(f)
    with gzip.open(files["vocab.txt.gz"].path, "rt", encoding="utf-8") as fh:
        words = fh.read().split("\n")[:-1]
    with gzip.open(files["vectors.float16.npy.gz"].path, "rb") as fh:
        matrix = np.load(fh).astype(np.float32)
    return {w: i for i, w in enumerate(words)}, matrix


def glove_sha256() -> str:
    root = mirror.resources_dir()
    manifest = mirror.read_manifest(root / GLOVE_FOLDER)  # type: ignore[operator]
    return manifest["files"]["vectors.float16.npy.gz"]["sha256"]
