"""Word-level Kim-CNN and LSTM classifiers with FLAT's preprocessing (FLAT App. A, "Models").

* CNN (Kim 2014): one convolutional layer, filter widths 3/4/5 x 100 maps, ReLU,
  max-over-time pooling, dropout 0.5, linear classifier.
* LSTM: one unidirectional layer; the last hidden state of each (unpadded) sequence feeds a
  dropout + linear classifier.

Embeddings are initialised from GloVe 6B 50-d (substituting FLAT's 300-d word2vec; words
GloVe lacks get U(-0.25, 0.25) as in Kim 2014, padding is zero) and fine-tuned.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from suite.models.base import Batch, ModelOutput, TextClassifier
from suite.models.text_processing import Vocabulary


class WordLevelClassifier(TextClassifier):
    def __init__(self, vocab: Vocabulary, num_labels: int, embedding_dim: int, max_length: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.num_labels = num_labels
        self.max_length = max_length
        self.embedding = nn.Embedding(len(vocab), embedding_dim, padding_idx=0)

    def init_embeddings(self, word_to_row: dict[str, int], matrix: np.ndarray, seed: int) -> dict[str, Any]:
        """Copy pretrained vectors in; returns coverage facts for the run record."""
        rng = np.random.default_rng(seed)
        weights = rng.uniform(-0.25, 0.25, size=(len(self.vocab), matrix.shape[1])).astype(np.float32)
        weights[0] = 0.0
        found = 0
        for i, word in enumerate(self.vocab.words[2:], start=2):
            row = word_to_row.get(word)
            if row is not None:
                weights[i] = matrix[row]
                found += 1
        with torch.no_grad():
            self.embedding.weight.copy_(torch.from_numpy(weights))
        return {"vocab_size": len(self.vocab), "pretrained_coverage": round(found / max(1, len(self.vocab) - 2), 4)}

    def encode(self, texts: Sequence[tuple[str, ...]]) -> Batch:
        """Pad/truncate every text to ``max_length`` (FLAT: fixed mini-batch sentence length)."""
        rows = [self.vocab.ids(" ".join(parts), self.max_length) for parts in texts]
        ids = torch.tensor([tok + [0] * (self.max_length - len(tok)) for tok in rows], dtype=torch.long)
        ids = ids.reshape(len(texts), self.max_length)
        lengths = torch.tensor([len(tok) for tok in rows], dtype=torch.long)
        mask = (torch.arange(self.max_length)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask}

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch["input_ids"])

    def description(self) -> dict[str, Any]:
        return {**super().description(), "vocab": self.vocab.words, "max_length": self.max_length,
                "embedding_dim": self.embedding.embedding_dim, "options": getattr(self, "options", {})}


class KimCNN(WordLevelClassifier):
    def __init__(self, vocab: Vocabulary, num_labels: int, embedding_dim: int = 50, max_length: int = 50,
                 filter_sizes: tuple[int, ...] = (3, 4, 5), num_filters: int = 100, dropout: float = 0.5) -> None:
        super().__init__(vocab, num_labels, embedding_dim, max(max_length, max(filter_sizes)))
        self.options = {"filter_sizes": list(filter_sizes), "num_filters": num_filters, "dropout": dropout}
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_filters * len(filter_sizes), num_labels)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        x = embeds.transpose(1, 2)  # [B, D, T]
        pooled = torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)
        logits = self.classifier(self.dropout(pooled))
        return ModelOutput(logits, pooled if return_features else None)


class LSTMClassifier(WordLevelClassifier):
    def __init__(self, vocab: Vocabulary, num_labels: int, embedding_dim: int = 50, max_length: int = 50,
                 hidden_size: int = 150, dropout: float = 0.5) -> None:
        super().__init__(vocab, num_labels, embedding_dim, max_length)
        self.options = {"hidden_size": hidden_size, "dropout": dropout}
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        lengths = batch["attention_mask"].sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        last = h_n[-1]
        logits = self.classifier(self.dropout(last))
        return ModelOutput(logits, last if return_features else None)
