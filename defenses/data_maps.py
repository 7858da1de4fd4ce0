"""Data maps of adversarial loss: stage 1 of robust_instances (Zheng et al. 2023, "Characterizing the
Impacts of Instances on Robustness", /work/shared/papers/robust_instances.txt).

§2.1: after each of T epochs of standard training, every training instance is attacked by PGD on its
word embeddings (App. A.2, Table 4: step size η = 0.08, random start ε0 = 0.05, K = 8 steps, no bound)
and its adversarial loss ℓ_adv(x_i, y_i, θ_t) recorded (:func:`measure_epoch`). Per instance:

* **sensitivity** μ̂_i = (1/T) Σ_t ℓ_adv (Eq. 2);
* **variability** σ̂_i = sqrt((1/T) Σ_t (ℓ_adv − μ̂_i)²) (Eq. 3: the population std, divided by T);
* **flip rate**: "the rate of times the model provides incorrect predictions when the input is
  perturbed ... only T+1 possible values" (§2.1): the fraction of the T epochs whose perturbed
  prediction differs from the gold label (:func:`map_statistics`).

Regions (§2.2, Fig. 1: x = sensitivity, y = variability; Tables 1, 2, 6-8), :func:`rank`:

* ``robust`` = bottom-left (low sensitivity *and* low variability), ``non-robust`` = bottom-right
  (high sensitivity, low variability), ``swing`` = top (high variability);
* Table 8's one-statistic regions: ``low-sensitivity``, ``high-sensitivity``, ``low-variability``,
  ``small-flip-rate``, ``large-flip-rate``. Aliases: ``bottom-left``, ``bottom-right``, ``top``,
  ``high-variability``.

The paper does not say how "the p% most robust" combines two statistics; Table 8 shows that
``robust`` is not ``low-sensitivity`` (different numbers), and Table 6's bottom-left row equals
Table 8's robust row. Chosen here after the authors' release (ruizheng20/robust_data,
``sort_df_by_metric`` with ``do_norm``): both statistics are min-max normalised over the training
set, and the corner regions are ranked by squared distance to their corner, (0, 0) for robust and
(1, 0) for non-robust; swing ranks by variability, descending. Ties keep the training order, except
for the flip rates (only T+1 values), which break ties by sensitivity (small: lower first; large:
higher first). ``p%`` of N instances is ``floor(N · p / 100)``.

Table 6's "Training Loss" rows use the same statistics of the clean training loss
(``statistic: training-loss``; its flip rate is the clean error rate over the epochs).

Choices where the paper is silent or differs from the release (each also a setting or listed):

* the ascent step: §2.1 writes ``sign(∇)``, but App. A.2's hyperparameters (η, ε0, no bound) are
  those of FreeLB-style L2 PGD, which the release uses (``adv_norm_type l2``); default ``l2``
  (per-example normalised gradient, ``defenses.perturbation``), ``perturbation.norm: linf`` gives
  the sign step and a uniform ``[-ε0, ε0]`` start;
* measurement in eval mode (no dropout; the release attacks in train mode), on the gold labels, at
  the loss of ``x + δ_K`` after all K steps, at the end of each epoch t = 1..T (Eq. 2's θ_t; the
  release's scripts measure at the start of epochs 2..T);
* the release ranks by ``perturbed_loss_mean`` for stage 2 (that is ``low-sensitivity``) and by
  the adversarial-minus-clean loss difference for its data maps; this module follows the paper's
  statistics; the release also balances the classes of a selection (``balance_labels``, default off:
  the paper does not mention it): each class gets ``floor(count / C)`` of the count, by rank.

The per-epoch history is cached as JSON (:func:`store_document`, written atomically under a file
lock) keyed by the sha256 of what determines it (:func:`cache_key`), so the stage-2 variants of
one (dataset, backbone, seed, settings) share one stage 1.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defenses.perturbation import PerturbationConfig, normalize_gradient, project, random_init, token_mask
from suite.core.errors import SuiteError
from suite.core.files import write_text_atomically
from suite.data.examples import Example
from suite.models.base import TextClassifier
from suite.models.batching import make_batch

FORMAT = 1  # of the cached document; part of the cache key
STATISTICS = ("adversarial-loss", "training-loss")
REGIONS = ("robust", "non-robust", "swing", "low-sensitivity", "high-sensitivity", "low-variability",
           "small-flip-rate", "large-flip-rate")
ALIASES = {"bottom-left": "robust", "bottom-right": "non-robust", "top": "swing", "high-variability": "swing"}
HISTORY_FIELDS = ("adversarial_loss", "adversarial_correct", "training_loss", "training_correct")
PNG_POINTS = 20000  # the figure draws at most this many instances (every k-th in training order)


def canonical_region(name: str) -> str:
    """The region's canonical name (``bottom-left`` -> ``robust``...); SuiteError when unknown."""
    region = ALIASES.get(name, name)
    if region not in REGIONS:
        raise SuiteError(f"region must be one of {', '.join(REGIONS + tuple(ALIASES))}, got {name!r}")
    return region


@dataclass(frozen=True)
class Statistics:
    """Per-instance statistics of one loss history (``[N]`` float64 arrays)."""

    sensitivity: np.ndarray  # Eq. 2: mean loss over the epochs
    variability: np.ndarray  # Eq. 3: population std over the epochs
    flip_rate: np.ndarray  # fraction of epochs with a wrong prediction


def map_statistics(losses: np.ndarray, correct: np.ndarray) -> Statistics:
    """Eq. 2, Eq. 3 and the flip rate of a ``[T, N]`` loss history and its ``[T, N]`` correctness."""
    losses = np.asarray(losses, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if losses.ndim != 2 or losses.shape != correct.shape or losses.shape[0] < 1:
        raise SuiteError(f"data map: expected [T, N] histories with T >= 1, got {losses.shape} and {correct.shape}")
    return Statistics(sensitivity=losses.mean(axis=0), variability=losses.std(axis=0, ddof=0),
                      flip_rate=1.0 - correct.mean(axis=0))


def _unit(values: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] (all zeros when the values are all equal)."""
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def rank(stats: Statistics, region: str) -> np.ndarray:
    """Instance positions, most typical of ``region`` first (see the module docstring)."""
    region = canonical_region(region)
    s, v, f = stats.sensitivity, stats.variability, stats.flip_rate
    index = np.arange(len(s))
    if region in ("robust", "non-robust"):
        corner = 0.0 if region == "robust" else 1.0
        keys: tuple[np.ndarray, ...] = ((_unit(s) - corner) ** 2 + _unit(v) ** 2,)
    else:
        keys = {"swing": (-v,), "low-sensitivity": (s,), "high-sensitivity": (-s,), "low-variability": (v,),
                "small-flip-rate": (f, s), "large-flip-rate": (-f, -s)}[region]
    return np.lexsort((index, *reversed(keys)))  # lexsort: the last key is the primary one


def count_for(n: int, percent: float) -> int:
    """``floor(n · percent / 100)`` (robust to float noise: 30 % of 10 is 3)."""
    return int(math.floor(n * percent / 100.0 + 1e-9))


def select(stats: Statistics, region: str, percent: float, labels: Sequence[int] | None = None,
           balance_labels: bool = False) -> list[int]:
    """Positions of the ``percent`` % most typical instances of ``region``, in training order.

    ``balance_labels``: each of the C classes present gets ``floor(count / C)`` instances by rank
    (the release's ``do_balance_labels``); a class with fewer instances gives all it has."""
    order = rank(stats, region)
    count = count_for(len(order), percent)
    if not balance_labels:
        return sorted(int(i) for i in order[:count])
    if labels is None:
        raise SuiteError("data map: balance_labels needs the instances' labels")
    classes = sorted(set(int(y) for y in labels))
    quota = count // max(1, len(classes))
    taken = {c: 0 for c in classes}
    chosen = []
    for i in order:
        label = int(labels[int(i)])
        if taken[label] < quota:
            taken[label] += 1
            chosen.append(int(i))
    return sorted(chosen)


# --- stage 1 measurement ------------------------------------------------------------------------
def attack_batch(model: TextClassifier, batch: dict[str, torch.Tensor], perturbation: PerturbationConfig,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and adversarial logits of ``batch``: PGD on ``model.embed(batch)`` (real tokens only),
    ``delta_0 = random_init(ε0)``, then K times ``delta <- proj(delta + η · normalize(∇_delta CE))``
    (no projection when ``max_norm`` is 0 or None); the adversarial logits are those at ``x + delta_K``."""
    eps, norm, labels = perturbation.max_norm, perturbation.norm, batch["labels"]
    with torch.no_grad():
        clean = model.embed(batch)
        clean_logits = model.forward_embeddings(clean, batch).logits
    mask = token_mask(batch, clean)
    delta = project(random_init(clean, mask, perturbation.init_magnitude, norm, generator), eps, norm)
    for _ in range(int(perturbation.steps)):
        leaf = delta.detach().requires_grad_()
        loss = F.cross_entropy(model.forward_embeddings(clean + leaf, batch).logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            delta = project(delta + perturbation.step_size * normalize_gradient(grad * mask, norm) * mask, eps, norm)
    with torch.no_grad():
        adv_logits = model.forward_embeddings(clean + delta, batch).logits
    return clean_logits, adv_logits


def measure_epoch(model: TextClassifier, examples: Sequence[Example], batch_size: int, device: torch.device,
                  perturbation: PerturbationConfig, generator: torch.Generator) -> dict[str, np.ndarray]:
    """Clean and adversarial loss and correctness of every example under the current weights (§2.1),
    in eval mode (the model's mode is restored), on the gold labels (:func:`attack_batch`).
    Returns ``[N]`` arrays: float32 losses, bool correctness."""
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in HISTORY_FIELDS}
    # cuDNN refuses an RNN's backward in eval mode: off (that flag only) while an RNN model is attacked on GPU
    cudnn = torch.backends.cudnn.enabled
    if device.type == "cuda" and any(isinstance(m, torch.nn.RNNBase) for m in model.modules()):
        torch.backends.cudnn.enabled = False
    try:
        for start in range(0, len(examples), batch_size):
            batch = make_batch(model, examples[start:start + batch_size], device)
            clean_logits, adv_logits = attack_batch(model, batch, perturbation, generator)
            for prefix, logits in (("adversarial", adv_logits), ("training", clean_logits)):
                out[f"{prefix}_loss"].append(F.cross_entropy(logits.float(), batch["labels"], reduction="none").cpu())
                out[f"{prefix}_correct"].append((logits.argmax(-1) == batch["labels"]).cpu())
    finally:
        model.train(was_training)
        torch.backends.cudnn.enabled = cudnn
    result = {name: torch.cat(parts).numpy() if parts else np.zeros(0) for name, parts in out.items()}
    for name in ("adversarial_loss", "training_loss"):
        if not np.isfinite(result[name]).all():
            raise SuiteError(f"data map: a non-finite {name.replace('_', ' ')} (lower perturbation.step_size)")
    return result


# --- the cached document -------------------------------------------------------------------------
def _short_floats(values: np.ndarray) -> list[float]:
    """float32 values as the Python floats of their 9-significant-digit decimals: the JSON stays
    short and ``np.float32`` of the parsed number is the original value again."""
    return [float(s) for s in np.char.mod("%.9g", np.asarray(values, dtype=np.float32))]


def history_document(key: str, key_fields: Mapping[str, Any], examples: Sequence[Example],
                     epochs: Sequence[Mapping[str, np.ndarray]], step_losses: Sequence[Sequence[float]],
                     seconds: float) -> dict[str, Any]:
    """The JSON-ready stage-1 record: per epoch, per instance losses and correctness."""
    doc: dict[str, Any] = {"format": FORMAT, "key": key, "key_fields": dict(key_fields),
                           "ids": [ex.id for ex in examples], "labels": [int(ex.label) for ex in examples],
                           "epochs": len(epochs), "step_losses": [list(map(float, s)) for s in step_losses],
                           "stage1_seconds": float(seconds)}
    for name in HISTORY_FIELDS:
        if name.endswith("_loss"):
            doc[name] = [_short_floats(epoch[name]) for epoch in epochs]
        else:
            doc[name] = ["".join("1" if c else "0" for c in epoch[name].tolist()) for epoch in epochs]
    return doc


@dataclass(frozen=True)
class DataMap:
    """A stage-1 history: ``[T, N]`` arrays in training order."""

    ids: tuple[str, ...]
    labels: np.ndarray
    adversarial_loss: np.ndarray
    adversarial_correct: np.ndarray
    training_loss: np.ndarray
    training_correct: np.ndarray

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "DataMap":
        def flags(rows: Sequence[str]) -> np.ndarray:
            return np.stack([np.frombuffer(row.encode("ascii"), dtype=np.uint8) == ord("1") for row in rows])

        return cls(ids=tuple(doc["ids"]), labels=np.asarray(doc["labels"], dtype=np.int64),
                   adversarial_loss=np.asarray(doc["adversarial_loss"], dtype=np.float32),
                   adversarial_correct=flags(doc["adversarial_correct"]),
                   training_loss=np.asarray(doc["training_loss"], dtype=np.float32),
                   training_correct=flags(doc["training_correct"]))

    def statistics(self, statistic: str = "adversarial-loss") -> Statistics:
        if statistic not in STATISTICS:
            raise SuiteError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
        if statistic == "training-loss":
            return map_statistics(self.training_loss, self.training_correct)
        return map_statistics(self.adversarial_loss, self.adversarial_correct)


def cache_key(fields: Mapping[str, Any]) -> str:
    """sha256 of ``fields`` as canonical JSON (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples' (id, label) pairs, in order."""
    return cache_key({"examples": [[ex.id, int(ex.label)] for ex in examples]})


def cache_file(root: Path, key: str) -> Path:
    return Path(root) / f"{key}.json"


def load_document(root: Path, key: str) -> dict[str, Any] | None:
    """The cached document of ``key``, or None (absent, unreadable, another format or key)."""
    path = cache_file(root, key)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
        return None
    return doc


def store_document(root: Path, key: str, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as ``<root>/<key>.json``: to a temporary file, then ``os.replace`` under a file
    lock (``filelock``, as ``suite.core.store``), so no reader ever sees a partial file."""
    from filelock import FileLock

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = cache_file(root, key)
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    with FileLock(str(path) + ".lock"):
        write_text_atomically(path, text)
    return path


# --- artifacts -------------------------------------------------------------------------------------
def map_rows(data_map: DataMap, statistic: str, percent: float, selected: Sequence[int],
             balance_labels: bool = False) -> list[dict[str, Any]]:
    """One row per instance: id, label, the three statistics of ``statistic``, the training-loss
    mean and std, ``selected`` (the defense's choice) and ``region.<name>`` flags (in the top
    ``percent`` % of each region)."""
    stats = data_map.statistics(statistic)
    chosen = set(int(i) for i in selected)
    flags = {region: set(select(stats, region, percent, data_map.labels, balance_labels)) for region in REGIONS}
    clean = data_map.statistics("training-loss")
    rows = []
    for i, example_id in enumerate(data_map.ids):
        row: dict[str, Any] = {"id": example_id, "label": int(data_map.labels[i]),
                               "sensitivity": float(stats.sensitivity[i]), "variability": float(stats.variability[i]),
                               "flip_rate": float(stats.flip_rate[i]),
                               "training_loss_mean": float(clean.sensitivity[i]),
                               "training_loss_std": float(clean.variability[i]), "selected": i in chosen}
        row.update({f"region.{region}": i in members for region, members in flags.items()})
        rows.append(row)
    return rows


def rows_json(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> bytes:
    return json.dumps({**meta, "rows": list(rows)}, indent=None, separators=(",", ":")).encode()


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def map_png(stats: Statistics, selected: Sequence[int], title: str) -> bytes:
    """Fig. 1: sensitivity (x) × variability (y), coloured by flip rate; the selected instances
    circled. Matplotlib's Agg canvas, without pyplot (no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(stats.sensitivity)
    every = max(1, math.ceil(n / PNG_POINTS))
    shown = np.arange(0, n, every)
    chosen = np.array(sorted(set(int(i) for i in selected) & set(shown.tolist())), dtype=np.int64)
    figure = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    points = axes.scatter(stats.sensitivity[shown], stats.variability[shown], c=stats.flip_rate[shown],
                          cmap="coolwarm", vmin=0.0, vmax=1.0, s=6, linewidths=0)
    if len(chosen):
        axes.scatter(stats.sensitivity[chosen], stats.variability[chosen], facecolors="none", edgecolors="black",
                     s=14, linewidths=0.4, label=f"selected ({len(selected)})")
        axes.legend(loc="upper right", fontsize=7)
    figure.colorbar(points, ax=axes, label="flip rate")
    axes.set_xlabel("sensitivity (mean loss over epochs)")
    axes.set_ylabel("variability (std over epochs)")
    axes.set_title(title + ("" if every == 1 else f" (every {every}th of {n})"), fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
