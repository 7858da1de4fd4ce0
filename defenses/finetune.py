"""Plain fine-tuning: the undefended baseline every paper compares against."""
from __future__ import annotations

from defenses.base import Defense, register_defense


@register_defense("finetune")
class FineTune(Defense):
    """Cross-entropy on clean training data (FLAT "-base", WETAR/adaptive_at "Fine-tune")."""

    reference = "baseline of all five papers"
