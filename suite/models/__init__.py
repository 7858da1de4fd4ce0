"""Backbones: the classifier interface, word-level CNN/LSTM and transformers."""
from suite.models.base import Batch, ModelOutput, TextClassifier
from suite.models.registry import BACKBONES, BackboneSpec, build_backbone

__all__ = ["BACKBONES", "Batch", "BackboneSpec", "ModelOutput", "TextClassifier", "build_backbone"]
