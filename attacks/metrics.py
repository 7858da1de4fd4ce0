"""Robustness metrics with pinned definitions (the suite's protocol, issue "Attacks" §4).

Over the N examples of the pinned attack set, each attack result is one of
``skipped`` (the model already misclassifies the original), ``successful`` (the attack
flipped a correct prediction) or ``failed`` (the prediction stayed correct):

* **Aua%** (accuracy under attack) = failed / N x 100. Skipped examples count as not robust.
* **Suc%** (attack success rate) = successful / (N - skipped) x 100.
* **#Query** = mean model queries over the non-skipped examples (successful + failed), the
  convention of TextAttack's attack summary; skipped examples cost one query and are excluded.
* **Clean%** (of the attacked set) = (N - skipped) / N x 100; the headline Clean% of a run is
  measured on the full test split by the trainer, not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

RESULT_TYPES = ("successful", "failed", "skipped")


@dataclass(frozen=True)
class RobustnessMetrics:
    n: int
    successful: int
    failed: int
    skipped: int
    attacked_clean_accuracy: float
    accuracy_under_attack: float
    attack_success_rate: float
    mean_queries: float

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "successful": self.successful, "failed": self.failed, "skipped": self.skipped,
                "clean_accuracy_attacked_set": self.attacked_clean_accuracy,
                "aua": self.accuracy_under_attack, "suc": self.attack_success_rate,
                "queries": self.mean_queries}


def robustness_metrics(results: Iterable[Mapping[str, object]]) -> RobustnessMetrics:
    """Metrics from per-example records with keys ``result`` (one of RESULT_TYPES) and ``queries``."""
    records = list(results)
    counts = {t: 0 for t in RESULT_TYPES}
    queries: list[float] = []
    for rec in records:
        kind = rec["result"]
        if kind not in counts:
            raise ValueError(f"unknown attack result type {kind!r}; expected one of {RESULT_TYPES}")
        counts[kind] += 1  # type: ignore[index]
        if kind != "skipped":
            queries.append(float(rec["queries"]))  # type: ignore[arg-type]
    n = len(records)
    attacked = n - counts["skipped"]
    return RobustnessMetrics(
        n=n, successful=counts["successful"], failed=counts["failed"], skipped=counts["skipped"],
        attacked_clean_accuracy=100.0 * attacked / n if n else float("nan"),
        accuracy_under_attack=100.0 * counts["failed"] / n if n else float("nan"),
        attack_success_rate=100.0 * counts["successful"] / attacked if attacked else float("nan"),
        mean_queries=sum(queries) / len(queries) if queries else float("nan"),
    )
