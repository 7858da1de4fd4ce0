"""TextAttack model wrapper for every suite backbone.

All backbones implement ``TextClassifier.encode``, so one wrapper serves transformers and the
word-level CNN/LSTM: candidate texts are scored in batches of ``batch_size`` with dynamic
padding (transformers: ``tokenizer.model_max_length`` is already the run's ``max_length``,
so nothing pads to 512).
"""
from __future__ import annotations

from typing import Sequence

import torch

from attacks.resources import prepare_textattack_env

prepare_textattack_env()  # TextAttack's import needs the offline NLTK data in place
from textattack.models.wrappers import ModelWrapper

from suite.models.base import TextClassifier


class SuiteModelWrapper(ModelWrapper):
    def __init__(self, model: TextClassifier, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self.queries = 0

    def __call__(self, text_input_list: Sequence[str | tuple[str, ...]], **kwargs: object) -> torch.Tensor:
        texts = [t if isinstance(t, tuple) else (t,) for t in text_input_list]
        self.queries += len(texts)
        outputs = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.model.encode(texts[start:start + self.batch_size])
                batch = {k: v.to(self.model.device) for k, v in batch.items()}
                outputs.append(self.model(batch).logits.float().cpu())
        return torch.cat(outputs, dim=0)
