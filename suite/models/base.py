"""The classifier interface every backbone implements.

Defenses see only this interface, so one implementation of, e.g., embedding-space PGD works on
a transformer and on the word-level CNN/LSTM alike:

* ``encode(texts)`` turns raw texts into a batch of tensors (``input_ids``, ``attention_mask``…);
* ``embed(batch)`` returns the input embeddings (the embedding layer's output, ``[B, T, D]``);
* ``forward_embeddings(embeds, batch)`` runs the rest of the network from (possibly perturbed)
  embeddings and returns logits and, on request, the pooled feature vector.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_model, save_model
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class ModelOutput:
    logits: torch.Tensor
    features: torch.Tensor | None = None  # pooled representation before the classifier


class TextClassifier(nn.Module):
    """Base class of every backbone; see the module docstring for the contract."""

    backbone_name: str = ""
    num_labels: int = 2

    def encode(self, texts: Sequence[tuple[str, ...]]) -> Batch:
        raise NotImplementedError

    def embed(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        raise NotImplementedError

    def forward(self, batch: Batch, return_features: bool = False) -> ModelOutput:  # type: ignore[override]
        return self.forward_embeddings(self.embed(batch), batch, return_features=return_features)

    # --- persistence: safetensors weights + a JSON description, never pickle -------------
    def description(self) -> dict[str, Any]:
        """JSON-serialisable facts needed to rebuild this model before loading its weights."""
        return {"backbone": self.backbone_name, "num_labels": self.num_labels}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))
        (folder / "model.json").write_text(json.dumps(self.description(), indent=1), encoding="utf-8")

    def load_weights(self, folder: Path) -> None:
        load_model(self, str(folder / "model.safetensors"), device=str(next(self.parameters()).device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's current ``state_dict`` (names, dtypes, shapes and raw bytes, in name order).

    Identifies the exact weights, e.g. to cache training-time attacks per model state; tensors that
    share memory (tied embeddings) are hashed under each of their names.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()
