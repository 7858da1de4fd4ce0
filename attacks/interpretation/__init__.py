"""Interpretation consistency of original/adversarial pairs (FLAT §5.2, Table 3 / Table 8, Fig. 6).

``attribution``: IG (captum) and LIME (lime) word attributions; ``consistency``: Kendall's tau,
top-k intersection and the per-attack, class-averaged aggregation. captum, lime and scipy are
imported when first used.
"""
from attacks.interpretation.attribution import (
    Attribution,
    ig_units,
    integrated_gradients,
    lime_attributions,
    lime_units,
)
from attacks.interpretation.consistency import (
    Pair,
    aligned_pairs,
    candidate_pairs,
    class_average,
    consistency,
    kendall_tau,
    topk_intersection,
    topk_positions,
)

__all__ = [
    "Attribution", "Pair", "aligned_pairs", "candidate_pairs", "class_average", "consistency", "ig_units",
    "integrated_gradients", "kendall_tau", "lime_attributions", "lime_units", "topk_intersection",
    "topk_positions",
]
