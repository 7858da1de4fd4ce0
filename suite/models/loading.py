"""Rebuilding a saved classifier from its checkpoint folder (model.json + model.safetensors).

A plain backbone is rebuilt by its registered ``BackboneSpec`` (``spec.rebuild``); a wrapped
model (``suite.models.wrapped``; ``model.json`` has a ``"wrapper"`` key) by its registered wrapper
class around its rebuilt inner model. The weights of the whole model are loaded last.

``load_classifier(folder, device, sha256=...)`` first checks ``model.safetensors`` against the
digest its run recorded (tag ``checkpoint_sha256``): a corrupted or truncated file is a one-line
error, never a model that is attacked (and whose records are cached) under the recorded digest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from suite.core.errors import SuiteError
from suite.data.mirror import sha256_of
from suite.models.base import TextClassifier
from suite.models.registry import BACKBONES
from suite.models.wrapped import WRAPPERS


def rebuild_classifier(description: dict[str, Any]) -> TextClassifier:
    """The architecture a ``model.json`` describes (wrappers recursively), weights not loaded."""
    if "wrapper" in description:
        inner = rebuild_classifier(description["inner"])
        return WRAPPERS.get(description["wrapper"]).from_description(dict(description.get("settings", {})), inner)
    return BACKBONES.get(description["backbone"]).rebuild(description)


WEIGHTS, DESCRIPTION = "model.safetensors", "model.json"


def verify_checkpoint(folder: Path, sha256: str, fix: str = "re-run the job with --force") -> None:
    """A one-line SuiteError unless ``folder`` holds ``model.json`` and a ``model.safetensors`` whose
    sha256 is ``sha256``; ``fix`` says what to do about it."""
    weights = folder / WEIGHTS
    missing = [name for name in (WEIGHTS, DESCRIPTION) if not (folder / name).is_file()]
    if missing:
        raise SuiteError(f"checkpoint {folder} lacks {', '.join(missing)}; {fix}")
    actual = sha256_of(weights)
    if actual != sha256:
        raise SuiteError(f"checkpoint {weights} has sha256 {actual[:12]}… but its run recorded {sha256[:12]}… "
                         f"(the file is corrupted or truncated, {weights.stat().st_size} bytes); {fix}")


def load_classifier(folder: Path, device: torch.device | str = "cpu", sha256: str | None = None,
                    fix: str = "re-run the job with --force") -> TextClassifier:
    """The classifier saved in ``folder`` by ``TextClassifier.save``, on ``device``, in eval mode.

    ``sha256``: the digest the checkpoint's run recorded; the weights file is verified against it
    before anything is loaded (:func:`verify_checkpoint`; ``fix`` ends its error).
    """
    if sha256 is not None:
        verify_checkpoint(folder, sha256, fix)
    description = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
    if "wrapper" not in description:
        return BACKBONES.get(description["backbone"]).load(folder, device)
    model = rebuild_classifier(description)
    model.to(device)
    model.load_weights(folder)
    model.eval()
    return model
