"""Word attributions for FLAT's interpretation consistency (FLAT §5.2, Table 3 / Table 8).

FLAT §5.2 compares the interpretations of original/adversarial example pairs, obtained "via
local post-hoc interpretation methods that identify feature (word/token) attributions to the
model prediction per example": IG (Sundararajan et al. 2017; white-box, Table 3) and LIME
(Ribeiro et al. 2016; black-box, Table 8), both "on corresponding labels".

* :func:`integrated_gradients` — ``captum.attr.IntegratedGradients`` over the input embeddings.
* :func:`lime_attributions` — ``lime.lime_text.LimeTextExplainer`` with position features.

Both attribute through the whole ``model`` (a defense's :class:`WrappedClassifier`, e.g. FLAT's
word-mask model, included: masks and all); the inner-most backbone only names the units
(its tokenizer / vocabulary). captum and lime are imported when first used.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from suite.models.base import Batch, TextClassifier
from suite.models.text_processing import UNK, tokenize
from suite.models.wrapped import innermost

LIME_SPLIT = r"\s+"  # LIME units = whitespace-separated strings (see lime_attributions)
COLUMN_SEPARATOR = "\n"  # how TextAttack's AttackedText.text joins the columns of a multi-column input


@dataclass(frozen=True)
class Attribution:
    """Attribution scores of one text on one label (FLAT §5.2: "word/token attributions").

    ``words``: the attribution units, in text order (all columns, column by column);
    ``scores``: float64, one per unit; ``delta``: IG only, captum's convergence delta,
    ``sum(all token attributions) - (f(x) - f(baseline))`` (captum's sign), ``None`` for LIME;
    ``outside``: IG only, the attribution of tokens that are no unit (HF special and padding
    tokens), so ``scores.sum() + outside == f(x) - f(baseline) + delta``; ``gap``: IG only,
    ``f(x) - f(baseline)`` (the target probability at the input minus at the zero baseline).
    """

    words: tuple[str, ...]
    scores: np.ndarray
    delta: float | None = None
    outside: float = 0.0
    gap: float | None = field(default=None)

    def __post_init__(self) -> None:
        scores = np.array(self.scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(self.words):
            raise ValueError(f"{len(scores)} scores for {len(self.words)} units")
        scores.flags.writeable = False
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "scores", scores)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attribution):
            return NotImplemented
        return (self.words == other.words and np.array_equal(self.scores, other.scores)
                and self.delta == other.delta and self.outside == other.outside and self.gap == other.gap)

    def __hash__(self) -> int:
        return hash((self.words, self.scores.tobytes(), self.delta, self.outside, self.gap))


# --- IG units --------------------------------------------------------------------------------
UnitMap = tuple[tuple[str, ...], np.ndarray]  # (the units, each token's unit index or -1)


def _word_level_maps(inner: Any, texts: Sequence[tuple[str, ...]], width: int) -> list[UnitMap]:
    """Word-level models: unit i = token i of ``tokenize(" ".join(columns))[:max_length]``
    (the model's own tokens, as ``WordLevelClassifier.encode``; an empty text is one UNK)."""
    maps = []
    for parts in texts:
        words = tuple(tokenize(" ".join(parts))[:inner.max_length]) or (UNK,)
        token_map = np.full(width, -1, dtype=np.int64)
        token_map[:len(words)] = np.arange(len(words))
        maps.append((words, token_map))
    return maps


def _hf_maps(inner: Any, texts: Sequence[tuple[str, ...]],
             input_ids: torch.Tensor | None) -> list[UnitMap]:
    """HF models: units = the words of the fast tokenizer's ``word_ids()`` (per column, in order);
    a word's tokens all map to it, special (and padding) tokens to none (-1)."""
    tokenizer = inner.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"word attributions need a fast tokenizer (word_ids()); {type(tokenizer).__name__} is not")
    columns = [list(c) for c in zip(*texts)]
    enc = tokenizer(*columns, padding=True, truncation=True, max_length=inner.max_length)
    if input_ids is not None and enc["input_ids"] != input_ids.tolist():
        raise RuntimeError("the tokenizer's re-encoding differs from model.encode(); cannot map tokens to words")
    maps = []
    for i, parts in enumerate(texts):
        index: dict[tuple[int, int], int] = {}
        words: list[str] = []
        word_ids, seq_ids = enc.word_ids(i), enc.sequence_ids(i)
        token_map = np.full(len(word_ids), -1, dtype=np.int64)
        for t, (w, s) in enumerate(zip(word_ids, seq_ids)):
            if w is None or s is None:
                continue
            if (s, w) not in index:
                index[(s, w)] = len(words)
                span = enc.word_to_chars(i, w, sequence_index=s)
                words.append(parts[s][span.start:span.end])
            token_map[t] = index[(s, w)]
        maps.append((tuple(words), token_map))
    return maps


def _unit_maps(model: TextClassifier, texts: Sequence[tuple[str, ...]],
               batch: Batch | None) -> list[UnitMap]:
    inner = innermost(model)
    if hasattr(inner, "vocab") and hasattr(inner, "max_length"):
        width = int(batch["input_ids"].shape[1]) if batch is not None else inner.max_length
        maps = _word_level_maps(inner, texts, width)
        if batch is not None and "attention_mask" in batch:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            if [len(w) for w, _ in maps] != lengths:
                raise RuntimeError("the model's token counts differ from tokenize(); cannot map tokens to words")
        return maps
    if hasattr(inner, "tokenizer") and hasattr(inner, "max_length"):
        return _hf_maps(inner, texts, None if batch is None else batch["input_ids"])
    raise TypeError(f"cannot find the attribution units of {type(inner).__name__} (no vocab or tokenizer)")


def ig_units(model: TextClassifier, texts: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The IG units of each text (see :func:`integrated_gradients`), without running the model."""
    return [words for words, _ in _unit_maps(model, [tuple(t) for t in texts], None)]


def lime_units(texts: Sequence[tuple[str, ...]], *, split_expression: str = LIME_SPLIT) -> list[tuple[str, ...]]:
    """LIME's units of each text: its ``IndexedString(..., bow=False)`` split of the joined columns."""
    from lime.lime_text import IndexedString

    return [tuple(str(w) for w in IndexedString(_join(t), split_expression=split_expression, bow=False).inverse_vocab)
            for t in texts]


# --- helpers -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_mode(model: TextClassifier) -> Iterator[None]:
    """Evaluation mode (dropout off) for the duration; the caller's mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _rnn_backward_context(model: TextClassifier) -> contextlib.AbstractContextManager[Any]:
    """cuDNN cannot run an RNN backward in eval mode; IG through an LSTM on CUDA turns it off."""
    has_rnn = any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    if has_rnn and model.device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def _join(parts: Sequence[str]) -> str:
    parts = tuple(parts)
    if len(parts) > 1 and any(COLUMN_SEPARATOR in p for p in parts):
        raise ValueError("a column of a multi-column text contains a line break: cannot join the columns")
    return COLUMN_SEPARATOR.join(parts)


def _check(texts: Sequence[tuple[str, ...]], labels: Sequence[int]) -> tuple[list[tuple[str, ...]], list[int]]:
    texts_, labels_ = [tuple(t) for t in texts], [int(y) for y in labels]
    if len(texts_) != len(labels_):
        raise ValueError(f"{len(texts_)} texts but {len(labels_)} labels")
    return texts_, labels_


# --- IG ------------------------------------------------------------------------------------------
def integrated_gradients(model: TextClassifier, texts: Sequence[tuple[str, ...]], labels: Sequence[int], *,
                         n_steps: int = 50, batch_size: int = 16, internal_batch_size: int = 128,
                         method: str = "gausslegendre") -> list[Attribution]:
    """IG word attributions (FLAT §5.2, Table 3: "IG computes feature attributions by integrating
    gradients of points along a path from a baseline to the input").

    ``captum.attr.IntegratedGradients`` over the input embeddings ``model.embed(batch)`` with a
    zero baseline; the target is the softmax probability of ``labels[i]`` (FLAT: "on corresponding
    labels") computed by ``model.forward_embeddings`` (the whole model: a wrapper's masks
    included). The model runs in eval mode (restored after), gradients enabled, no
    ``torch.no_grad`` on the path; the batch's other tensors (attention_mask, ...) go through
    ``additional_forward_args`` so captum expands them with the interpolation steps.

    A token's attribution is the sum over the embedding dimension, a word's the sum over its
    tokens. Units: word-level models — the model's tokens ``tokenize(text)[:max_length]``; HF
    models — the words of the fast tokenizer's ``word_ids()`` (special tokens excluded; their
    attribution is :attr:`Attribution.outside`). Each result carries captum's convergence delta.
    ``batch_size`` texts are encoded together; ``internal_batch_size`` (step, text) rows go
    through one forward pass; ``method`` is captum's quadrature (its default, Gauss-Legendre).
    """
    from captum.attr import IntegratedGradients

    texts_, labels_ = _check(texts, labels)
    out: list[Attribution] = []
    with _eval_mode(model), torch.enable_grad(), _rnn_backward_context(model):
        for start in range(0, len(texts_), batch_size):
            chunk, targets = texts_[start:start + batch_size], labels_[start:start + batch_size]
            batch = {k: v.to(model.device) for k, v in model.encode(chunk).items()}
            maps = _unit_maps(model, chunk, batch)
            keys = tuple(batch)

            def probabilities(embeds: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
                logits = model.forward_embeddings(embeds, dict(zip(keys, extra))).logits
                return torch.softmax(logits, dim=-1)

            extras = tuple(batch[k] for k in keys)
            embeds = model.embed(batch).detach()
            baseline = torch.zeros_like(embeds)
            attributions, deltas = IntegratedGradients(probabilities).attribute(
                embeds, baselines=baseline, target=targets, additional_forward_args=extras, n_steps=n_steps,
                method=method, internal_batch_size=max(internal_batch_size, len(chunk)),
                return_convergence_delta=True)
            index = torch.tensor(targets, device=embeds.device)[:, None]
            gaps = (probabilities(embeds, *extras).gather(1, index)
                    - probabilities(baseline, *extras).gather(1, index)).detach().double().cpu().numpy()[:, 0]
            token_scores = attributions.detach().double().sum(dim=-1).cpu().numpy()
            for i, (words, token_map) in enumerate(maps):
                row, inside = token_scores[i], token_map >= 0
                scores = np.zeros(len(words), dtype=np.float64)
                np.add.at(scores, token_map[inside], row[inside])
                out.append(Attribution(words, scores, float(deltas[i]), float(row[~inside].sum()), float(gaps[i])))
    return out


# --- LIME ----------------------------------------------------------------------------------------
def _probability_fn(model: TextClassifier, columns: int, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    """LIME's ``classifier_fn``: softmax probabilities (float64) of the perturbed strings, in batches;
    a multi-column text is split back into its columns at the line breaks LIME keeps."""

    def predict(strings: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(strings), batch_size):
            part = strings[start:start + batch_size]
            texts = [(s,) if columns == 1 else tuple(s.split(COLUMN_SEPARATOR)) for s in part]
            with torch.no_grad():
                batch = {k: v.to(model.device) for k, v in model.encode(texts).items()}
                rows.append(torch.softmax(model(batch).logits.double(), dim=-1).cpu().numpy())
        return np.concatenate(rows, axis=0)

    return predict


def lime_attributions(model: TextClassifier, texts: Sequence[tuple[str, ...]], labels: Sequence[int], *,
                      num_samples: int = 5000, seed: int = 0, batch_size: int = 64,
                      split_expression: str = LIME_SPLIT, mask_string: str | None = None) -> list[Attribution]:
    """LIME word attributions (FLAT §5.2, Table 8: "LIME explains neural network predictions by
    fitting a local linear model with input perturbations and producing word attributions").

    ``LimeTextExplainer(bow=False, split_expression=r"\\s+", random_state=seed)``: position
    features, so the i-th unit of an original and of its word-for-word adversarial text are the
    same feature. Units = LIME's own split of the text at whitespace (TextAttack swaps whole
    whitespace-delimited words, punctuation attached, so positions survive a substitution; the
    default ``\\W+`` split would also cut at apostrophes and hyphens a synonym may add or drop).
    The columns of a multi-column text are joined by a line break (as TextAttack's
    ``AttackedText.text``) and split back for the model. ``classifier_fn`` = the softmax
    probabilities of ``model`` (eval mode) on the perturbed strings, ``batch_size`` at a time;
    the explained label is ``labels[i]``; ``num_features`` = the number of units with
    ``feature_selection="none"`` (the same all-feature ridge fit ``"auto"`` ends with, faster).
    A fresh explainer seeded with ``seed`` explains each text, so a text's attribution depends
    on nothing else (and a pair of equal-length texts gets the same perturbation masks). Scores
    sit at their positions (0 for a feature LIME did not return).
    """
    from lime.lime_text import LimeTextExplainer

    texts_, labels_ = _check(texts, labels)
    out: list[Attribution] = []
    with _eval_mode(model):
        for parts, label in zip(texts_, labels_):
            explainer = LimeTextExplainer(split_expression=split_expression, bow=False, mask_string=mask_string,
                                          random_state=seed, feature_selection="none")
            joined = _join(parts)
            words = lime_units([parts], split_expression=split_expression)[0]
            scores = np.zeros(len(words), dtype=np.float64)
            if words:
                explanation = explainer.explain_instance(
                    joined, _probability_fn(model, len(parts), batch_size), labels=(label,),
                    num_features=len(words), num_samples=num_samples)
                for position, weight in explanation.as_map()[label]:
                    scores[int(position)] = float(weight)
            out.append(Attribution(words, scores))
    return out
