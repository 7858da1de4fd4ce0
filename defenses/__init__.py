"""Defenses: one module per family, each registering itself in ``DEFENSES`` on import.

Every module of this package is imported here, so a new family is a new module and nothing
else; third-party packages use the ``suite.defenses`` entry-point group instead.
"""
import importlib
import pkgutil

from defenses.base import DEFENSES, Defense, DefenseConfig, Phase, TrainingContext, register_defense

_INFRASTRUCTURE = {"base", "perturbation"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE and not _module.startswith("_"):
        importlib.import_module(f"defenses.{_module}")

__all__ = ["DEFENSES", "Defense", "DefenseConfig", "Phase", "TrainingContext", "register_defense"]
