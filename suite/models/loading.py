"""Rebuilding a saved classifier from its checkpoint folder (model.json + model.safetensors)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from suite.models.base import TextClassifier
from suite.models.registry import BACKBONES


def load_classifier(folder: Path, device: torch.device | str = "cpu") -> TextClassifier:
    desc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    spec = BACKBONES.get(desc["backbone"])
    model: TextClassifier
    if spec.kind == "word":
        from suite.models.text_processing import Vocabulary
        from suite.models.word_models import KimCNN, LSTMClassifier

        cls = KimCNN if spec.name == "cnn" else LSTMClassifier
        options = dict(desc.get("options", {}))
        if "filter_sizes" in options:
            options["filter_sizes"] = tuple(options["filter_sizes"])
        model = cls(Vocabulary(desc["vocab"]), desc["num_labels"], embedding_dim=desc["embedding_dim"],
                    max_length=desc["max_length"], **options)
    elif desc.get("source") == "random":
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from suite.models.registry import minilm_path
        from suite.models.transformer import HFClassifier

        model = HFClassifier(BertForSequenceClassification(BertConfig(num_labels=desc["num_labels"])),
                             AutoTokenizer.from_pretrained(str(minilm_path())), desc["max_length"], spec.name, "random")
    else:
        from suite.models.transformer import HFClassifier

        model = HFClassifier.from_pretrained(desc["source"], desc["num_labels"], desc["max_length"], spec.name)
    model.backbone_name = spec.name
    model.to(device)
    model.load_weights(folder)
    model.eval()
    return model
