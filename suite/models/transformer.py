"""Hugging Face encoder backbones behind the ``TextClassifier`` interface."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from suite.models.base import Batch, ModelOutput, TextClassifier


class HFClassifier(TextClassifier):
    """``AutoModelForSequenceClassification`` + its tokenizer, run from input embeddings.

    ``embed`` returns the word-embedding output (before position / segment embeddings and
    LayerNorm, the space FreeLB and PGD perturb); ``forward_embeddings`` passes it as
    ``inputs_embeds``. ``tokenizer.model_max_length`` is set to ``max_length`` so wrappers that
    pad "to max length" (TextAttack's) do not pad to 512.
    """

    def __init__(self, hf_model: Any, tokenizer: Any, max_length: int, backbone_name: str, source: str) -> None:
        super().__init__()
        self.backbone_name = backbone_name
        self.source = source
        self.num_labels = hf_model.config.num_labels
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.tokenizer.model_max_length = max_length
        self.hf_model = hf_model

    @classmethod
    def from_pretrained(cls, source: str | Path, num_labels: int, max_length: int, backbone_name: str) -> "HFClassifier":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=num_labels)
        return cls(model, tokenizer, max_length, backbone_name, str(source))

    def encode(self, texts: Sequence[tuple[str, ...]]) -> Batch:
        columns = list(zip(*texts))
        enc = self.tokenizer(*[list(c) for c in columns], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return dict(enc)

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.hf_model.get_input_embeddings()(batch["input_ids"])

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        kwargs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids")}
        out = self.hf_model(inputs_embeds=embeds, output_hidden_states=return_features, **kwargs)
        features = out.hidden_states[-1][:, 0] if return_features else None
        return ModelOutput(out.logits, features)

    def description(self) -> dict[str, Any]:
        return {**super().description(), "source": self.source, "max_length": self.max_length}
