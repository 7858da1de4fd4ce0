"""TextAttack model wrapper for every suite backbone, with batch-invariant scores.

All backbones implement ``TextClassifier.encode``, so one wrapper serves transformers and the
word-level CNN/LSTM (transformers: ``tokenizer.model_max_length`` is already the run's
``max_length``, so nothing pads to 512).

**A text's logits do not depend on the texts it is scored with.** Plain batching does not
give that on CPU: a Kim-CNN's logits for the same text differed in the last bits between
batch sizes (199 of 200 rows, batch 1 vs 200), packed LSTM batches depend on the other rows'
lengths, and a transformer's on the padding length. Attack searches compare scores (``>``,
sorting, near-ties between candidates that tokenise alike), so a record would depend on how
TextAttack happened to batch a call and could not be reproduced by any other schedule. Here
every forward has a shape that depends only on the texts' own token length:

* the texts' encodings are de-duplicated and grouped by token length;
* each group is scored in chunks of exactly ``batch_size`` rows (a short chunk is filled up
  by repeating its last row); a transformer chunk holds no padding at all, a word-level
  model's chunk has the model's fixed length.

Whether a fixed chunk shape is enough depends on the chunk size and the machine's kernels:
here (Intel Xeon, AVX-512, torch 1 thread, oneDNN off) a row's logits were identical whatever
the other rows and its position for Kim-CNN at 4, 6, 8, 12 and 24 rows (not 15), LSTM at 4, 6,
16, 24 and 32 (not 8, 12, 15) and MiniLM at 8, 16 and 32. :func:`default_score_batch` picks
invariant and fast sizes measured here (Kim-CNN under the protocol's determinism settings runs
7.2 k rows/s at 8 rows but 0.9 k at 16 and more: a slower convolution path); the attack engine
re-checks invariance on the machine it runs on (``attacks.engine.invariance``) and follows
stock's own call schedule where it does not hold. ``batch_size`` is part of every attack's
recorded settings: another chunk size may give other last bits.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from attacks.resources import prepare_textattack_env

prepare_textattack_env()  # TextAttack's import needs the offline NLTK data in place
from textattack.models.wrappers import ModelWrapper

from suite.models.base import Batch, TextClassifier
from suite.models.word_models import WordLevelClassifier

#: rows per forward while attacking, by backbone class name (measured on CPU, see the module docstring)
SCORE_BATCH = {"KimCNN": 8, "LSTMClassifier": 16}
DEFAULT_SCORE_BATCH = 16


def _backbone(model: TextClassifier) -> TextClassifier:
    """The backbone under ``model``'s wrappers (``suite.models.wrapped``: ``.inner``)."""
    while isinstance(getattr(model, "inner", None), TextClassifier):
        model = model.inner
    return model


def _fixed_width(model: TextClassifier) -> bool:
    """Word-level backbones pad every text to their fixed length (their scores depend on it)."""
    return isinstance(_backbone(model), WordLevelClassifier)


def default_score_batch(model: TextClassifier) -> int:
    """Rows per forward for ``model`` when the run does not set one (``SCORE_BATCH``, by backbone)."""
    return SCORE_BATCH.get(type(_backbone(model)).__name__, DEFAULT_SCORE_BATCH)


class SuiteModelWrapper(ModelWrapper):
    def __init__(self, model: TextClassifier, batch_size: int | None = None) -> None:
        batch_size = default_score_batch(model) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.queries = 0  # texts asked for
        self.rows = 0  # rows actually run through the model (chunks filled up included)
        self.seconds = 0.0  # wall time inside the model's forward passes (the forward-bound share)

    def __call__(self, text_input_list: Sequence[str | tuple[str, ...]], **kwargs: object) -> torch.Tensor:
        texts = [t if isinstance(t, tuple) else (t,) for t in text_input_list]
        self.queries += len(texts)
        if not texts:
            return torch.zeros(0, getattr(self.model, "num_labels", 2))
        self.model.eval()
        with torch.no_grad():
            encoded = self.model.encode(texts)
            return self._score(encoded)

    def _score(self, encoded: Batch) -> torch.Tensor:
        mask = encoded["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        fixed_width = _fixed_width(self.model)
        arrays = [v.numpy() for _, v in sorted(encoded.items())]
        unique: dict[tuple[int, bytes], int] = {}  # (length, row bytes) -> unique row number
        row_of = []  # text -> its unique row number
        groups: dict[int, list[int]] = {}  # length -> the first text of each of its unique rows
        for i, length in enumerate(lengths):
            width = mask.shape[1] if fixed_width else length
            key = (length, b"".join(a[i, :width].tobytes() for a in arrays))
            if key not in unique:
                unique[key] = len(unique)
                groups.setdefault(length, []).append(i)
            row_of.append(unique[key])
        logits: dict[int, torch.Tensor] = {}
        device = self.model.device
        for length, members in sorted(groups.items()):
            width = mask.shape[1] if fixed_width else length
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                rows = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
                index = torch.tensor(rows)
                batch = {k: v[index, :width].to(device) for k, v in encoded.items()}
                started = time.perf_counter()
                out = self.model(batch).logits.float().cpu()
                self.seconds += time.perf_counter() - started
                self.rows += len(rows)
                for j, i in enumerate(chunk):
                    logits[row_of[i]] = out[j]
        return torch.stack([logits[u] for u in row_of])
