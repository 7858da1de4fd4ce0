"""Batching and evaluation of a classifier: examples -> tensors, predictions, accuracy."""
from __future__ import annotations

import os
from typing import Sequence

import torch
from tqdm.auto import tqdm

from suite.data.examples import Example
from suite.models.base import Batch, TextClassifier


def make_batch(model: TextClassifier, examples: Sequence[Example], device: torch.device,
               indices: Sequence[int] | None = None) -> Batch:
    batch = model.encode([ex.texts for ex in examples])
    batch["labels"] = torch.tensor([ex.label for ex in examples], dtype=torch.long)
    if indices is not None:
        batch["example_index"] = torch.as_tensor(list(indices), dtype=torch.long)
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model: TextClassifier, examples: Sequence[Example], batch_size: int, device: torch.device,
            desc: str | None = None) -> list[int]:
    was_training = model.training
    model.eval()
    preds: list[int] = []
    starts = range(0, len(examples), batch_size)
    # an explicit disable= overrides tqdm's TQDM_DISABLE default, so honour the variable here
    quiet = desc is None or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")
    for start in tqdm(starts, desc=desc, leave=False, disable=quiet):
        chunk = examples[start:start + batch_size]
        preds.extend(model(make_batch(model, chunk, device)).logits.argmax(-1).tolist())
    model.train(was_training)
    return preds


def accuracy(model: TextClassifier, examples: Sequence[Example], batch_size: int, device: torch.device,
             desc: str | None = None) -> float:
    """Percentage of ``examples`` classified correctly (0.0 for an empty list)."""
    if not examples:
        return 0.0
    preds = predict(model, examples, batch_size, device, desc)
    return 100.0 * sum(p == ex.label for p, ex in zip(preds, examples)) / len(examples)
