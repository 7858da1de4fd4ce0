"""k-PGD in embedding space as an evaluation attack (CARL/RAR §4.5, Tables 4-5).

For every example the input embeddings are perturbed by ``delta`` maximising the
cross-entropy: ``steps`` L2-normalised gradient-ascent steps of size ``step_size``, each followed
by projection onto the L2 ball of radius ``epsilon`` (per example, over the
[tokens x dim] matrix of real tokens — the norm FreeLB uses). CARL/RAR report accuracy under
this attack for several maximum norms (Table 5: eps = 0.02, 0.075, 0.1) and the cosine
similarity / Euclidean distance between the clean and adversarial sentence representations
(Table 4). They do not state k or the step size; the suite uses k = 10 and Madry et al.'s
step size 2.5 * eps / k, recorded with every run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from suite.data.examples import Example
from suite.models.base import Batch, TextClassifier
from suite.models.batching import make_batch
from suite.models.embedding_space import per_example_norm


@dataclass(frozen=True)
class KPGDSettings:
    epsilon: float = 0.1
    steps: int = 10
    step_size: float | None = None  # None: 2.5 * epsilon / steps

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.epsilon / self.steps

    def record(self) -> dict[str, float]:
        return {**asdict(self), "step_size": self.alpha}


def kpgd_delta(model: TextClassifier, batch: Batch, settings: KPGDSettings) -> torch.Tensor:
    """The adversarial embedding perturbation for ``batch`` (||delta_i||_2 <= epsilon)."""
    with torch.no_grad():
        embeds = model.embed(batch)
    mask = batch["attention_mask"].unsqueeze(-1).to(embeds.dtype)
    delta = torch.zeros_like(embeds, requires_grad=True)
    for _ in range(settings.steps):
        loss = F.cross_entropy(model.forward_embeddings(embeds + delta * mask, batch).logits, batch["labels"])
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            grad = grad * mask
            delta += settings.alpha * grad / per_example_norm(grad)
            delta *= torch.clamp(settings.epsilon / per_example_norm(delta * mask), max=1.0)
    return (delta * mask).detach()


def kpgd_evaluate(model: TextClassifier, examples: Sequence[Example], settings: KPGDSettings,
                  batch_size: int = 32) -> dict[str, float]:
    """Accuracy (%) under k-PGD and mean clean-vs-adversarial feature cosine / Euclidean distance."""
    was_training = model.training
    model.eval()
    correct, cosines, distances = 0, [], []
    for start in range(0, len(examples), batch_size):
        batch = make_batch(model, examples[start:start + batch_size], model.device)
        delta = kpgd_delta(model, batch, settings)
        with torch.no_grad():
            embeds = model.embed(batch)
            clean = model.forward_embeddings(embeds, batch, return_features=True)
            adv = model.forward_embeddings(embeds + delta, batch, return_features=True)
        correct += int((adv.logits.argmax(-1) == batch["labels"]).sum())
        cosines.append(F.cosine_similarity(clean.features, adv.features, dim=-1))
        distances.append((clean.features - adv.features).norm(dim=-1))
    model.train(was_training)
    n = len(examples)
    return {"accuracy": 100.0 * correct / n, "cosine": float(torch.cat(cosines).mean()),
            "euclidean": float(torch.cat(distances).mean()), "n": n}
