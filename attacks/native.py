"""The evaluators of the suite's own (non-TextAttack) attacks, named by their registry entries
(``AttackSpec.evaluator``) and run by :meth:`attacks.registry.AttackSpec.evaluate`.

* ``k-pgd`` (kind ``embedding``): k-PGD in embedding space on the pinned attack set (CARL/RAR
  §4.5, Tables 4-5; :mod:`attacks.embedding_pgd`).
* ``advglue`` (kind ``static``): accuracy on the AdvGLUE adversarial dev set of the job's dataset
  (adaptive_at Tables 2-3); the pinned attack set is not used.

Each returns a :class:`~attacks.registry.NativeResult`: metrics without the attack-name prefix,
the hash of the recorded settings (``attacks.evaluation.attack_config_hash``), the summary
logged with the run, and no per-example records.
"""
from __future__ import annotations

from typing import Any, Sequence

from attacks.evaluation import attack_config_hash
from attacks.registry import AttackSpec, NativeResult
from suite.core.errors import SuiteError
from suite.data.examples import Example
from suite.models.base import TextClassifier


def _result(record: dict[str, Any], result: dict[str, Any]) -> NativeResult:
    metrics = {k: float(v) for k, v in result.items()}
    return NativeResult(metrics, attack_config_hash(record), {"settings": record, "metrics": result}, [])


def evaluate_kpgd(spec: AttackSpec, model: TextClassifier, examples: Sequence[Example], dataset: str) -> NativeResult:
    """Accuracy under k-PGD and the clean-vs-adversarial feature cosine / distance on ``examples``."""
    from attacks.embedding_pgd import KPGDSettings, kpgd_evaluate

    settings = KPGDSettings()
    result = kpgd_evaluate(model, examples, settings)
    return _result({**spec.record(), "settings": settings.record()}, result)


def evaluate_static(spec: AttackSpec, model: TextClassifier, examples: Sequence[Example], dataset: str) -> NativeResult:
    """Accuracy on the static adversarial set registered for ``dataset`` (``static_eval_for``)."""
    from suite.data import DATASETS
    from suite.data.splits import load_test_split
    from suite.models.batching import accuracy

    static = [n for n, s in DATASETS.items() if dataset in s.static_eval_for]
    if not static:
        covered = sorted({d for _, s in DATASETS.items() for d in s.static_eval_for})
        raise SuiteError(f"{spec.name} has no adversarial set for dataset '{dataset}' (only for {', '.join(covered)})")
    test = load_test_split(static[0])
    result = {"accuracy": accuracy(model, test, 64, model.device), "n": len(test)}
    return _result({**spec.record(), "evaluation_set": static[0]}, result)
