"""The suite's attack engine: stock TextAttack recipes, the same records, less overhead.

``engine_attack(attack, spec)`` returns ``(attacker, note)``: an
:class:`attacks.engine.attacker.EngineAttack` and ``None`` when the engine covers the stock
``Attack`` (see :mod:`attacks.engine.support`), else the stock ``attack`` itself and a
one-line note saying why it runs on stock TextAttack. Either way ``attacker.attack(example,
ground_truth_output)`` returns TextAttack's result classes.

What is reproduced, and how, is in the modules: :mod:`~attacks.engine.text` (candidate
strings), :mod:`~attacks.engine.goal` (queries, scores, batches, cache),
:mod:`~attacks.engine.greedy_wir` (the search).
"""
from __future__ import annotations

from typing import Any

ENGINE_NAME = "suite-fast"
#: bump when a change could alter any record (it is part of every attack's config hash)
ENGINE_VERSION = 1
ENGINES = ("fast", "textattack")


def engine_attack(attack: Any, spec: Any) -> tuple[Any, str | None]:
    """(the engine's attacker, None), or (``attack``, why the engine does not cover it)."""
    from attacks.engine.attacker import EngineAttack
    from attacks.engine.support import NotCovered, plan_for

    try:
        plan = plan_for(attack)
    except NotCovered as exc:
        return attack, f"attack {spec.name}: the fast engine does not cover its {exc}; running stock TextAttack"
    return EngineAttack(attack, plan, ENGINE_NAME, ENGINE_VERSION), None
