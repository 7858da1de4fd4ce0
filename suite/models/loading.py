"""Rebuilding a saved classifier from its checkpoint folder (model.json + model.safetensors).

A plain backbone is rebuilt by its registered ``BackboneSpec`` (``spec.rebuild``); a wrapped
model (``suite.models.wrapped``; ``model.json`` has a ``"wrapper"`` key) by its registered wrapper
class around its rebuilt inner model. The weights of the whole model are loaded last.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from suite.models.base import TextClassifier
from suite.models.registry import BACKBONES
from suite.models.wrapped import WRAPPERS


def rebuild_classifier(description: dict[str, Any]) -> TextClassifier:
    """The architecture a ``model.json`` describes (wrappers recursively), weights not loaded."""
    if "wrapper" in description:
        inner = rebuild_classifier(description["inner"])
        return WRAPPERS.get(description["wrapper"]).from_description(dict(description.get("settings", {})), inner)
    return BACKBONES.get(description["backbone"]).rebuild(description)


def load_classifier(folder: Path, device: torch.device | str = "cpu") -> TextClassifier:
    """The classifier saved in ``folder`` by ``TextClassifier.save``, on ``device``, in eval mode."""
    description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    if "wrapper" not in description:
        return BACKBONES.get(description["backbone"]).load(folder, device)
    model = rebuild_classifier(description)
    model.to(device)
    model.load_weights(folder)
    model.eval()
    return model
