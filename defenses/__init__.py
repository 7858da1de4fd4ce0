"""Defenses: one module per family, each registered in ``DEFENSES`` on import."""
from defenses import finetune  # noqa: F401  (registers)
from defenses.base import DEFENSES, Defense, DefenseConfig, TrainingContext, register_defense

__all__ = ["DEFENSES", "Defense", "DefenseConfig", "TrainingContext", "register_defense"]
