"""Interpretation consistency of original/adversarial pairs (FLAT §5.2, Table 3, Table 8, Fig. 6).

FLAT §5.2: "We evaluate interpretation consistency under two metrics, Kendall's Tau order rank
correlation ... and Top-k intersection ... For both metrics, we compute the interpretation
consistency on corresponding labels and take the average over all classes as the overall
consistency." Table 3 reports IG with k = 5, Table 8 LIME, Fig. 6 top-k for k = 1..10; "we
treat synonyms as the 'same' words" — word-for-word substitution keeps positions, so units are
compared position by position and a synonym at the same position is the same feature.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from suite.models.base import TextClassifier

METHODS = ("ig", "lime")


# --- the two metrics -------------------------------------------------------------------------------
def _vector(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau between two aligned attribution vectors (FLAT §5.2, "Kendall's Tau order rank
    correlation": agreement of the two rankings of the word attributions).

    ``scipy.stats.kendalltau`` (tau-b, so ties count as neither concordant nor discordant);
    NaN where it is undefined: fewer than two positions or a constant vector.
    """
    x, y = _vector(a), _vector(b)
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs aligned vectors, got lengths {len(x)} and {len(y)}")
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    from scipy.stats import kendalltau

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(kendalltau(x, y).statistic)


def topk_positions(a: Sequence[float], k: int, *, magnitude: bool = False) -> np.ndarray:
    """Positions of the ``k`` largest scores (by ``|score|`` if ``magnitude``), largest first;
    ties go to the earlier position (a stable sort), ``k`` capped at the length."""
    x = _vector(a)
    key = np.abs(x) if magnitude else x
    return np.argsort(-key, kind="stable")[:min(int(k), len(x))]


def topk_intersection(a: Sequence[float], b: Sequence[float], k: int, *, magnitude: bool = False) -> float:
    """|top-k positions of a ∩ top-k positions of b| / k, with k capped at the length (FLAT §5.2,
    "Top-k intersection": "the proportion of intersection of top k important features").

    Positions, not strings, are compared, so a synonym substituted at a top position of both
    counts as the same word (FLAT: "we treat synonyms as the 'same' words"). Importance is the
    signed attribution to the label (``magnitude=True``: its absolute value); ties as in
    :func:`topk_positions`.
    """
    x, y = _vector(a), _vector(b)
    if x.shape != y.shape:
        raise ValueError(f"topk_intersection needs aligned vectors, got lengths {len(x)} and {len(y)}")
    if int(k) < 1 or len(x) == 0:
        raise ValueError(f"topk_intersection needs k >= 1 and a non-empty vector (k={k}, length {len(x)})")
    k_eff = min(int(k), len(x))
    shared = set(topk_positions(x, k_eff, magnitude=magnitude).tolist()) & set(
        topk_positions(y, k_eff, magnitude=magnitude).tolist())
    return len(shared) / k_eff


# --- pairs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One original/adversarial example pair (``index``: its position in ``records``)."""

    index: int
    original: tuple[str, ...]
    perturbed: tuple[str, ...]
    label: int


def candidate_pairs(records: Sequence[Mapping[str, Any]]) -> tuple[list[Pair], dict[str, int]]:
    """The records that make a pair, and counts of those that do not.

    A pair is a record whose ``result`` is not ``"skipped"`` and whose ``perturbed`` text differs
    from its ``original``. A multi-column record's ``perturbed`` is TextAttack's
    ``AttackedText.text`` (the columns joined by line breaks); it is split back into its columns
    when that is unambiguous (no original column holds a line break and the split gives one part
    per column), otherwise the record counts as unaligned.
    """
    pairs: list[Pair] = []
    counts = {"records": 0, "records_skipped": 0, "records_unchanged": 0, "pairs_unaligned": 0}
    for index, record in enumerate(records):
        counts["records"] += 1
        if record["result"] == "skipped":
            counts["records_skipped"] += 1
            continue
        original = tuple(str(c) for c in record["original"])
        perturbed_text = str(record["perturbed"])
        if perturbed_text == "\n".join(original):
            counts["records_unchanged"] += 1
            continue
        if len(original) == 1:
            perturbed: tuple[str, ...] = (perturbed_text,)
        else:
            parts = tuple(perturbed_text.split("\n"))
            if any("\n" in c for c in original) or len(parts) != len(original):
                counts["pairs_unaligned"] += 1
                continue
            perturbed = parts
        pairs.append(Pair(index, original, perturbed, int(record["label"])))
    return pairs, counts


def _units(model: TextClassifier, texts: list[tuple[str, ...]], method: str) -> list[tuple[str, ...]]:
    from attacks.interpretation.attribution import ig_units, lime_units

    return ig_units(model, texts) if method == "ig" else lime_units(texts)


def aligned_pairs(model: TextClassifier, records: Sequence[Mapping[str, Any]], *, method: str = "ig",
                  max_pairs: int | None = None, seed: int = 0) -> tuple[list[Pair], dict[str, int]]:
    """The pairs to evaluate and the counts (:func:`candidate_pairs` plus alignment).

    A pair whose original and adversarial units (those of ``method``) differ in number, or have
    none, is unaligned (counted in ``pairs_unaligned``). ``max_pairs``: a random subset of the
    aligned pairs, ``numpy.random.default_rng(seed)``, kept in record order (FLAT: LIME "on 1000
    random example pairs").
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pairs, counts = candidate_pairs(records)
    if pairs:
        units = _units(model, [p.original for p in pairs] + [p.perturbed for p in pairs], method)
        n = len(pairs)
        keep = [p for i, p in enumerate(pairs) if units[i] and len(units[i]) == len(units[n + i])]
        counts["pairs_unaligned"] += n - len(keep)
        pairs = keep
    if max_pairs is not None and len(pairs) > max_pairs:
        chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[i] for i in chosen]
    return pairs, counts


# --- aggregation -----------------------------------------------------------------------------------------
def class_average(values: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(mean over classes of the per-class mean, pooled mean) of the defined (non-NaN) values
    (FLAT §5.2: "take the average over all classes"); the classes are those present. NaN if none."""
    by_class: dict[int, list[float]] = {}
    for value, label in zip(values, labels):
        if not math.isnan(value):
            by_class.setdefault(int(label), []).append(float(value))
    if not by_class:
        return math.nan, math.nan
    macro = float(np.mean([np.mean(v) for _, v in sorted(by_class.items())]))
    pooled = float(np.mean([x for v in by_class.values() for x in v]))
    return macro, pooled


def consistency(model: TextClassifier, records: Sequence[Mapping[str, Any]], *, method: str = "ig", k: int = 5,
                ks: Sequence[int] = range(1, 11), max_pairs: int | None = None, seed: int = 0, n_steps: int = 50,
                lime_samples: int = 5000, magnitude: bool = False, batch_size: int | None = None) -> dict[str, float]:
    """FLAT's interpretation consistency of one attack's records (FLAT §5.2; Table 3 IG, Table 8 LIME).

    Pairs and alignment: :func:`aligned_pairs` (non-skipped records whose text changed, same number
    of units, ``max_pairs`` drawn with ``default_rng(seed)``). Both texts of a pair are attributed
    on the pair's gold label (FLAT: "on corresponding labels") with ``method`` ("ig":
    :func:`integrated_gradients` with ``n_steps``; "lime": :func:`lime_attributions` with
    ``lime_samples`` and ``seed``). Per pair: :func:`kendall_tau` and :func:`topk_intersection`
    for ``k`` and every k in ``ks``. Each metric is averaged within each gold-label class, then
    over the classes present, unweighted (FLAT: "take the average over all classes"); the pooled
    mean over pairs is ``<metric>_pooled``. A pair whose tau is undefined (a constant vector) is
    dropped from tau only and counted in ``kendall_tau_undefined``.

    Returns floats (MLflow-valid names; NaN where nothing was defined): ``kendall_tau``,
    ``topk_intersection`` (k), ``topk_intersection_k<k>`` for k in ``ks``, ``kendall_tau_pooled``,
    ``topk_intersection_pooled``, ``pairs``, ``pairs_unaligned``, ``kendall_tau_undefined``,
    ``records``, ``records_skipped``, ``records_unchanged``, ``classes``, and for IG
    ``ig_max_abs_delta`` = max |delta| / max(|f(x) - f(baseline)|, 1e-12) (completeness check).
    """
    from attacks.interpretation.attribution import integrated_gradients, lime_attributions

    pairs, counts = aligned_pairs(model, records, method=method, max_pairs=max_pairs, seed=seed)
    texts = [p.original for p in pairs] + [p.perturbed for p in pairs]
    labels = [p.label for p in pairs] * 2
    if method == "ig":
        attributions = integrated_gradients(model, texts, labels, n_steps=n_steps, batch_size=batch_size or 16)
    else:
        attributions = lime_attributions(model, texts, labels, num_samples=lime_samples, seed=seed,
                                         batch_size=batch_size or 64)
    n = len(pairs)
    gold = [p.label for p in pairs]
    taus = [kendall_tau(attributions[i].scores, attributions[n + i].scores) for i in range(n)]
    out: dict[str, float] = {}
    out["kendall_tau"], out["kendall_tau_pooled"] = class_average(taus, gold)
    for kk in dict.fromkeys([int(k), *(int(x) for x in ks)]):
        values = [topk_intersection(attributions[i].scores, attributions[n + i].scores, kk, magnitude=magnitude)
                  for i in range(n)]
        macro, pooled = class_average(values, gold)
        if kk == int(k):
            out["topk_intersection"], out["topk_intersection_pooled"] = macro, pooled
        if kk in {int(x) for x in ks}:
            out[f"topk_intersection_k{kk}"] = macro
    out.update({name: float(value) for name, value in counts.items()})
    out["pairs"] = float(n)
    out["kendall_tau_undefined"] = float(sum(math.isnan(t) for t in taus))
    out["classes"] = float(len(set(gold)))
    if method == "ig":
        ratios = [abs(a.delta or 0.0) / max(abs(a.gap or 0.0), 1e-12) for a in attributions]
        out["ig_max_abs_delta"] = max(ratios) if ratios else math.nan
    return out
