"""Attacks: the registry (``ATTACKS``), offline resources, TextAttack recipes and evaluation.

Importing this package does not import TextAttack; ``attacks.recipes.build_attack`` does,
after preparing the offline NLTK / TextAttack environment.
"""
from attacks.registry import ATTACKS, AttackSpec

__all__ = ["ATTACKS", "AttackSpec"]
