"""CARL and RAR (carl_rar §3.2-3.3): FreeLB plus a contrastive or a reconstruction objective.

Both run FreeLB as ``freelb`` does (Zhu et al. 2020 Alg. 1: k passes at ``x + delta_0 .. delta_{k-1}``,
each back-propagating ``L_C / k``; same start, step and generator) with carl_rar's settings (§4.3,
Table 1, "unchanged in CARL and RAR"). Config defaults: the SST-2 column, γ = ``init_magnitude`` 0.6,
α = ``step_size`` 0.1, ε = ``max_norm`` 0 (unbounded), n = ``steps`` 2. Other columns: Yahoo! γ 0,
α 0.01, n 3; Yelp-P γ 0.5, α 0.05, n 3; AG's News γ 0, α 0.01, n 3 (ε 0 everywhere). The ascent
follows ``L_C`` alone (the inner max of Eq. 1, 6, 7); the extra losses add parameter gradients only.

**carl** (§3.2, Eq. 2-6): ``L_C + L_D`` (Eq. 6), ``L_D = L^o_D + L^a_D`` (Eq. 3), ``h(x1, x2) =
exp(x1 . x2 / τ)`` (Eq. 4), τ = 0.07, M = 0.5, m = 16,000 (20,000 for Yelp-P; §4.3). ``L^a_D``:
anchor ``R^adv_i``, positive ``R_i``, negatives ``B_orig[j]``; ``L^o_D``: anchor ``R_i``, positive
``R^adv_i``, negatives ``B_adv[j]`` (Eq. 2). Eq. 2's softmax is approximated by NCE (§3.2, after
Tian et al. 2020 / Wu et al. 2018 §3.2) as CRD/CMC's code (``ContrastMemory``, ``ContrastLoss``, which
that code labels CRD Eq. 18 / CMC Eq. 12), per anchor type, with ``e = h``, ``P = e / Z``,
``P_n = 1/N`` (uniform over the N bank rows), eps = 1e-7::

    L = -(1/B) sum_i [ log P_i+ / (P_i+ + m P_n + eps) + sum_j log m P_n / (P_ij + m P_n + eps) ]

``Z = N * mean(e)`` over the first L_D batch's B x (m + 1) scores, then fixed (CMC). L_D is used
from ``global_step >= start_step`` (Table 3, "steps after which L_D will start to be used": SST-2
6315, Yahoo! 7200, Yelp-P 5625, AG 7750); the banks are written from one epoch of steps before
(§3.2: "use an entire epoch ... to initialize the whole memory bank") and at every step after.

**rar** (§3.3, Eq. 7): ``L_C + w_r L_R``, w_r = 0.1 from the first step; ``L_R`` is the
cross-entropy of a reconstructor's vocabulary logits against the original token ids; each FreeLB
pass adds ``w_r * L_R / k`` to its ``L_C / k``.

Choices where the paper is silent, and deviations:

1. Representations: ``forward_embeddings(..., return_features=True).features`` (HF: last-layer
   [CLS], §3.2 "output of ALBERT Encoding Block"; CNN: pooled maps; LSTM: last state),
   L2-normalised as CRD/CMC; no projection head (the paper has none; Table 7: CARL adds nothing).
2. ``R^adv``: the last FreeLB pass's (``x + delta_{k-1}``, the last input FreeLB trains on; no extra
   forward); ``R``: one extra clean forward (train mode). L_D (weight 1, Eq. 6) once per step. The
   last pass back-propagates ``L_C / k`` and its extra loss together (its delta gradient is unused).
3. Negatives: examples of another label (§3.2 "samples whose labels are different"; CMC draws any
   row), uniform with replacement (NCE's i.i.d. noise, CMC's sampler), from
   ``context.generator("carl-negatives", step)``, the same draws for both terms (CMC). Since P_n and
   Z use the same N, ``P / (P + m P_n) = e / (e + m mean(e))``: N cancels, so "uniform over the
   other-label rows" gives the same loss. m above the fewest other-label examples of any class
   (the paper has m < K) is clamped to it, warned about and logged (``carl.negatives``).
4. The positive pair is the live ``(R^adv_i, R_i)`` of Eq. 2 (both get gradients); CMC reads it
   from the bank. Banks are read before this step's write (CMC).
5. Eq. 5 rows are renormalised (CMC); a row's first write copies the representation (the paper's
   "initialize"). Unwritten rows (a fill epoch straddling a reshuffle, ``start_step`` < one epoch)
   keep CMC's uniform random init. One epoch = ``ceil(len(train) / B)`` steps, B the largest batch seen.
6. The banks are buffers of a parameter-free training-only module (:class:`MemoryBanks`, returned by
   ``extra_modules()`` so the trainer moves it; no optimiser sees it, the checkpoint never holds
   it), built at the first write (N = ``len(context.train)``). The suite never resumes mid-training.
7. Reconstructor: ``Linear(hidden -> emb) -> GeLU -> LayerNorm(emb) -> emb -> vocab`` tied to the
   input embedding matrix, plus a vocabulary bias (ALBERT's MLM head). §3.3 lists "a Layer
   Normalization, GeLU ... and two Feed Forward Layers"; LN(hidden) first would add 129,968
   parameters on albert-base-v2, Table 7 has 128,688 = 98,432 (768 -> 128, bias) + 256 (LN(128)) +
   30,000 (bias), which fixes this order. Exact GeLU, LN eps 1e-12 (ALBERT's), dense N(0, 0.02)
   (HF: ``initializer_range``). The tie is functional (``F.linear`` with the live embedding
   weight): the module holds no model parameter, as the trainer's check requires.
8. Token states: HF: ``hidden_states[-1]`` of one ``hf_model`` call (its logits are those of
   ``HFClassifier.forward_embeddings``); Kim-CNN: per token the ReLU maps of every filter width on
   windows centred on it ("same" zero padding, the model's ``convs``); LSTM: per-token outputs of
   the model's ``lstm``; other backbones: the perturbed input embeddings. No model change.
9. ``L_R`` is averaged over real tokens (``attention_mask == 1``), special tokens included.
10. The logged ``loss`` is the objective: mean ``L_C`` + ``L_D`` (carl) or + ``w_r L_R`` (rar).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import DefenseConfig, TrainingContext, register_defense
from defenses.embedding_at import FreeLB
from defenses.perturbation import PerturbationConfig, token_mask
from suite.core.errors import SuiteError
from suite.models.base import Batch, TextClassifier
from suite.models.transformer import HFClassifier
from suite.models.word_models import KimCNN, LSTMClassifier

log = logging.getLogger(__name__)

NCE_EPS = 1e-7  # CRD / CMC reference code
SST2_FREELB = PerturbationConfig(steps=2, step_size=0.1, init_magnitude=0.6, max_norm=0.0)  # Table 1, SST-2


# --- CARL: memory banks and the NCE loss ----------------------------------------------------------------------

def momentum_update(memory: torch.Tensor, written: torch.Tensor, index: torch.Tensor, features: torch.Tensor,
                    momentum: float) -> None:
    """Eq. 5 in place: ``v <- normalise(M v + (1 - M) f)`` at rows ``index`` (CMC renormalises);
    a row's first write copies ``normalise(f)``."""
    rows = memory[index]
    mixed = torch.where(written[index][:, None], momentum * rows + (1 - momentum) * features, features)
    memory[index] = F.normalize(mixed, dim=1)
    written[index] = True


def nce_loss(e_pos: torch.Tensor, e_neg: torch.Tensor, weights: torch.Tensor, z: float,
             noise: float) -> torch.Tensor:
    """NCE loss of one anchor type (module docstring): ``e_pos`` ``[B]``, ``e_neg`` ``[B, K]`` the
    ``h`` values, ``weights`` ``[B, K]`` how often each column was drawn (rows sum to m),
    ``z`` the constant Z, ``noise`` P_n."""
    p_pos, p_neg = e_pos / z, e_neg / z
    m_noise = weights.sum(dim=1) * noise  # m P_n per anchor
    log_d1 = torch.log(p_pos / (p_pos + m_noise + NCE_EPS))
    log_d0 = torch.log(m_noise[:, None] / (p_neg + m_noise[:, None] + NCE_EPS))
    return -(log_d1.sum() + (weights * log_d0).sum()) / e_pos.shape[0]


def estimate_z(e_pos: torch.Tensor, e_neg: torch.Tensor, weights: torch.Tensor, n_data: int) -> float:
    """CMC's constant: ``N * mean(e)`` over the batch's ``B x (m + 1)`` sampled scores."""
    total = e_pos.detach().sum() + (weights * e_neg.detach()).sum()
    return float(n_data * total / (e_pos.shape[0] + weights.sum()))


def negative_scores(anchor: torch.Tensor, memory: torch.Tensor,
                    idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``anchor . memory[j]`` for the drawn ``idx`` ``[B, m]``, as (scores, weights): the drawn rows
    (weights 1) when ``B * m < N``, else all N rows with draw counts (one ``B x N`` product); both
    backward passes are deterministic (no scatter on the device)."""
    b, m = idx.shape
    if b * m < memory.shape[0]:
        rows = memory[idx.to(memory.device)]  # [B, m, D], no gradient (the bank is a buffer)
        ones = torch.ones(b, m, device=anchor.device, dtype=anchor.dtype)
        return torch.einsum("bd,bmd->bm", anchor, rows), ones
    counts = torch.zeros(b, memory.shape[0], dtype=anchor.dtype)
    counts.scatter_add_(1, idx.cpu(), torch.ones(b, m, dtype=anchor.dtype))  # on the CPU: deterministic
    return anchor @ memory.T, counts.to(anchor.device)


def contrastive_term(anchor: torch.Tensor, positive: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor,
                     temperature: float, z: float | None) -> tuple[torch.Tensor, float]:
    """One of Eq. 2's terms (unit-norm ``anchor``, ``positive`` ``[B, D]``; negatives
    ``memory[idx]``); returns the loss and Z (estimated here when ``z`` is None)."""
    e_pos = torch.exp((anchor * positive).sum(dim=1) / temperature)
    scores, weights = negative_scores(anchor, memory, idx)
    e_neg = torch.exp(scores / temperature)
    n_data = memory.shape[0]
    z = estimate_z(e_pos, e_neg, weights, n_data) if z is None else z
    return nce_loss(e_pos, e_neg, weights, z, 1.0 / n_data), z


class NegativeSampler:
    """Uniform draws, with replacement, among the examples whose label differs from the anchor's."""

    def __init__(self, labels: torch.Tensor) -> None:
        classes = torch.unique(labels)
        pools = [torch.nonzero(labels != c).flatten() for c in classes]
        self.row = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
        self.row[classes] = torch.arange(len(classes))
        self.sizes = torch.tensor([len(p) for p in pools], dtype=torch.long)
        self.table = torch.zeros(len(pools), max(1, int(self.sizes.max())), dtype=torch.long)
        for r, pool in enumerate(pools):
            self.table[r, :len(pool)] = pool

    @property
    def fewest(self) -> int:
        """The fewest candidates any anchor has (0: one label only)."""
        return int(self.sizes.min())

    def sample(self, labels: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
        rows = self.row[labels.cpu()]
        size = self.sizes[rows][:, None]
        u = torch.rand(len(rows), m, generator=generator, dtype=torch.float64)
        pos = torch.minimum((u * size).long(), size - 1)
        return self.table[rows[:, None], pos]


class MemoryBanks(nn.Module):
    """``B_orig`` and ``B_adv`` (Eq. 5): buffers, no parameters; CMC's random init."""

    def __init__(self, size: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        stdv = 1.0 / math.sqrt(dim / 3)
        for name in ("original", "adversarial"):
            self.register_buffer(name, (torch.rand(size, dim, generator=generator) * 2 - 1) * stdv)
        self.register_buffer("written", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("z", torch.full((2,), -1.0, dtype=torch.float64))  # L^a_D's, L^o_D's; < 0: unset

    def update(self, index: torch.Tensor, original: torch.Tensor, adversarial: torch.Tensor,
               momentum: float) -> None:
        """Eq. 5 for both banks at rows ``index`` (marks them written)."""
        momentum_update(self.original, self.written.clone(), index, original, momentum)  # the clone: same first writes
        momentum_update(self.adversarial, self.written, index, adversarial, momentum)


# --- the FreeLB loop with an auxiliary loss --------------------------------------------------------------------

class FreeLBWithAuxiliary(FreeLB):
    """FreeLB's ``training_step`` (``EmbeddingAT.ascend`` with free gradients, same start, step and
    generator), with a hook that adds a loss to a pass; without it, exactly ``freelb``'s gradients."""

    def adversarial_forward(self, inputs: torch.Tensor, batch: Batch, t: int,
                            context: TrainingContext) -> tuple[torch.Tensor, Any]:
        """(logits, what :meth:`auxiliary_loss` needs) of ascent pass ``t``."""
        return self.model.forward_embeddings(inputs, batch).logits, None

    def auxiliary_loss(self, t: int, aux: Any, batch: Batch, context: TrainingContext) -> torch.Tensor | None:
        """The loss pass ``t`` adds to the parameters' gradient (not to the ascent), or None."""
        return None

    def after_pass(self, t: int, batch: Batch, context: TrainingContext) -> None:
        """After pass ``t``'s backward passes (CARL writes its banks here: the graph reads them)."""

    def training_step(self, batch: Batch, context: TrainingContext) -> dict[str, float]:
        k, labels = self.steps, batch["labels"]
        with torch.no_grad():
            clean = self.model.embed(batch)
        mask = token_mask(batch, clean)
        delta, state = self.start(batch, clean, mask, context)
        ce_sum = aux_sum = 0.0
        for t in range(k):
            leaf = delta.detach().requires_grad_()
            logits, aux = self.adversarial_forward(self.model.embed(batch) + leaf, batch, t, context)
            ce = F.cross_entropy(logits, labels)
            extra = self.auxiliary_loss(t, aux, batch, context)
            ce_sum += float(ce.detach())
            aux_sum += 0.0 if extra is None else float(extra.detach())
            if t == k - 1:  # FreeLB takes no k-th ascent step: one backward for the whole pass loss
                (ce / k if extra is None else ce / k + extra).backward()
                self.after_pass(t, batch, context)
                self.finish(batch, mask, state)
                break
            (ce / k).backward(retain_graph=extra is not None)
            grad = leaf.grad * k  # the ascent follows L_C alone (Eq. 1, 6, 7): read before the extra loss's
            if extra is not None:
                extra.backward()
            self.after_pass(t, batch, context)
            with torch.no_grad():
                delta, state = self.step(delta, state, grad * mask, mask)
        return {"loss": ce_sum / k + aux_sum, "ce": ce_sum / k, "auxiliary": aux_sum}


# --- CARL ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CARLConfig(DefenseConfig):
    """carl_rar §4.3: FreeLB of Table 1 (SST-2), m, Table 3's start step (SST-2), τ and M."""

    perturbation: PerturbationConfig = SST2_FREELB
    negatives: int = 16000  # m (§4.3; Yelp-P 20000); clamped to the fewest other-label examples
    start_step: int = 6315  # Table 3, SST-2: L_D from this global step on; the banks fill one epoch before
    temperature: float = 0.07  # τ of Eq. 4
    momentum: float = 0.5  # M of Eq. 5

    def __post_init__(self) -> None:
        self.perturbation.check("carl")
        if self.negatives < 1:
            raise SuiteError(f"carl: negatives (m) must be >= 1, got {self.negatives}")
        if self.start_step < 0:
            raise SuiteError(f"carl: start_step must be >= 0, got {self.start_step}")
        if self.temperature <= 0:
            raise SuiteError(f"carl: temperature (τ) must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise SuiteError(f"carl: momentum (M) must be in [0, 1), got {self.momentum}")


@register_defense("carl")
class CARL(FreeLBWithAuxiliary):
    """FreeLB + the contrastive loss L_D on memory banks (carl_rar §3.2, Eq. 2-6); see the module docstring."""

    Config = CARLConfig
    config: CARLConfig
    reference = "carl_rar §3.2 Eq. 2-6, §4.3, Tables 1 and 3; Tian et al. 2020 (CRD/CMC NCE)"

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.banks: MemoryBanks | None = None
        self.sampler: NegativeSampler | None = None
        self.m = 0  # the m in use (config.negatives, clamped)
        self.batch_size = 0  # the largest batch seen (sizes the fill epoch)
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # the step's bank write
        self._sums = {"ld": 0.0, "steps": 0.0}

    def on_train_start(self, context: TrainingContext) -> None:
        self.banks, self.sampler, self.m, self.batch_size = None, None, 0, 0

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"memory_banks": self.banks} if self.banks is not None else {}

    def contrastive_on(self, context: TrainingContext) -> bool:
        return context.global_step >= self.config.start_step

    def writing(self, context: TrainingContext) -> bool:
        """Bank writes: from one epoch of steps before ``start_step`` (§3.2's fill epoch)."""
        epoch_steps = math.ceil(len(context.train) / max(1, self.batch_size))
        return context.global_step >= self.config.start_step - epoch_steps

    def _ensure_banks(self, dim: int, device: torch.device, context: TrainingContext) -> MemoryBanks:
        if self.banks is None:
            labels = torch.tensor([ex.label for ex in context.train], dtype=torch.long)
            self.sampler = NegativeSampler(labels)
            if self.sampler.fewest < 1:
                raise SuiteError("carl: every training example has the same label; L_D needs examples of "
                                 "another label as negatives")
            self.m = min(self.config.negatives, self.sampler.fewest)
            if self.m < self.config.negatives:
                log.warning("carl: negatives m = %d exceeds the %d examples of other labels the rarest anchor has; "
                            "using m = %d", self.config.negatives, self.sampler.fewest, self.m)
            context.log_metric("carl.negatives", float(self.m), context.global_step)
            self.banks = MemoryBanks(len(context.train), dim, context.generator("carl-memory-banks")).to(device)
        return self.banks

    def adversarial_forward(self, inputs: torch.Tensor, batch: Batch, t: int,
                            context: TrainingContext) -> tuple[torch.Tensor, Any]:
        self.batch_size = max(self.batch_size, int(batch["labels"].shape[0]))
        want = t == self.steps - 1 and self.writing(context)
        out = self.model.forward_embeddings(inputs, batch, return_features=want)
        if want and out.features is None:
            raise SuiteError(f"carl: backbone {type(self.model).__name__} returns no features")
        return out.logits, out.features

    def auxiliary_loss(self, t: int, aux: Any, batch: Batch, context: TrainingContext) -> torch.Tensor | None:
        if aux is None:
            return None
        if "example_index" not in batch:
            raise SuiteError("carl: the batch has no example_index (the memory banks are indexed by training example)")
        adversarial = F.normalize(aux.float(), dim=1)
        banks = self._ensure_banks(adversarial.shape[1], adversarial.device, context)
        index = batch["example_index"].to(adversarial.device)
        loss = None
        if self.contrastive_on(context):
            original = F.normalize(self._clean_features(batch).float(), dim=1)
            assert self.sampler is not None
            draws = context.generator("carl-negatives", context.global_step)
            idx = self.sampler.sample(batch["labels"], self.m, draws)
            zs = [None if float(z) < 0 else float(z) for z in banks.z]
            tau = self.config.temperature
            loss_a, za = contrastive_term(adversarial, original, banks.original, idx, tau, zs[0])  # L^a_D
            loss_o, zo = contrastive_term(original, adversarial, banks.adversarial, idx, tau, zs[1])  # L^o_D
            if zs[0] is None or zs[1] is None:
                banks.z.copy_(torch.tensor([za, zo], dtype=torch.float64))
                context.log_metric("carl.z_adv", za, context.global_step)
                context.log_metric("carl.z_orig", zo, context.global_step)
            loss = loss_a + loss_o
            self._sums["ld"] += float(loss.detach())
            self._sums["steps"] += 1
        else:
            with torch.no_grad():
                original = F.normalize(self._clean_features(batch).float(), dim=1)
        self._pending = (index, original.detach(), adversarial.detach())
        return loss

    def after_pass(self, t: int, batch: Batch, context: TrainingContext) -> None:
        if self._pending is not None and self.banks is not None:
            with torch.no_grad():
                self.banks.update(*self._pending, self.config.momentum)
        self._pending = None

    def _clean_features(self, batch: Batch) -> torch.Tensor:
        features = self.model.forward_embeddings(self.model.embed(batch), batch, return_features=True).features
        if features is None:
            raise SuiteError(f"carl: backbone {type(self.model).__name__} returns no features")
        return features

    def on_epoch_start(self, context: TrainingContext) -> None:
        self._sums = {"ld": 0.0, "steps": 0.0}

    def on_epoch_end(self, context: TrainingContext) -> None:
        if self._sums["steps"]:
            context.log_metric("carl.contrastive", self._sums["ld"] / self._sums["steps"], context.epoch + 1)


# --- RAR ----------------------------------------------------------------------------------------------------

class Reconstructor(nn.Module):
    """ALBERT's MLM head shape (module docstring, item 7); the output weight is passed in (tied)."""

    def __init__(self, hidden: int, embedding: int, vocabulary: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, embedding)
        self.layer_norm = nn.LayerNorm(embedding, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocabulary))

    def forward(self, states: torch.Tensor, output_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(states))), output_weight, self.bias)


def input_embedding_matrix(model: TextClassifier) -> torch.Tensor:
    """The model's input embedding matrix ``[vocab, emb]`` (the live parameter, not a copy)."""
    if isinstance(model, HFClassifier):
        return model.hf_model.get_input_embeddings().weight
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, nn.Embedding):
        return embedding.weight
    raise SuiteError(f"rar: cannot find the input embedding matrix of {type(model).__name__} (needs an HF model or "
                     "an nn.Embedding attribute 'embedding')")


def token_state_size(model: TextClassifier) -> int:
    if isinstance(model, HFClassifier):
        return int(model.hf_model.config.hidden_size)
    if isinstance(model, KimCNN):
        return sum(int(conv.out_channels) for conv in model.convs)
    if isinstance(model, LSTMClassifier):
        return int(model.lstm.hidden_size)
    return int(input_embedding_matrix(model).shape[1])


def token_forward(model: TextClassifier, embeds: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, per-token states ``[B, T, H]``) from (perturbed) input embeddings (item 8)."""
    if isinstance(model, HFClassifier):
        kwargs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids")}
        out = model.hf_model(inputs_embeds=embeds, output_hidden_states=True, **kwargs)
        return out.logits, out.hidden_states[-1]
    logits = model.forward_embeddings(embeds, batch).logits
    if isinstance(model, KimCNN):
        x = embeds.transpose(1, 2)
        maps = [torch.relu(conv(F.pad(x, ((conv.kernel_size[0] - 1) // 2, conv.kernel_size[0] // 2))))
                for conv in model.convs]
        return logits, torch.cat(maps, dim=1).transpose(1, 2)
    if isinstance(model, LSTMClassifier):
        lengths = batch["attention_mask"].sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = model.lstm(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=embeds.shape[1])
        return logits, states
    return logits, embeds


@dataclass(frozen=True)
class RARConfig(DefenseConfig):
    """carl_rar §3.3 / §4.3: FreeLB of Table 1 (SST-2) and w_r = 0.1 (Eq. 7)."""

    perturbation: PerturbationConfig = SST2_FREELB
    weight: float = 0.1  # w_r of Eq. 7

    def __post_init__(self) -> None:
        self.perturbation.check("rar")
        if self.weight < 0:
            raise SuiteError(f"rar: weight (w_r) must be >= 0, got {self.weight}")


@register_defense("rar")
class RAR(FreeLBWithAuxiliary):
    """FreeLB + reconstruction of the original tokens from their adversarial states (carl_rar §3.3, Eq. 7)."""

    Config = RARConfig
    config: RARConfig
    reference = "carl_rar §3.3 Eq. 7, §4.3, Tables 1 and 7"

    def __init__(self, config: DefenseConfig, model: TextClassifier) -> None:
        super().__init__(config, model)
        self.reconstructor: Reconstructor | None = None
        self._sums = {"lr": 0.0, "steps": 0.0}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"reconstructor": self.reconstructor} if self.reconstructor is not None else {}

    def output_weight(self) -> torch.Tensor:
        """The reconstructor's output projection: the model's input embedding matrix itself."""
        return input_embedding_matrix(self.model)

    def on_train_start(self, context: TrainingContext) -> None:
        self.ensure_reconstructor(context)

    def ensure_reconstructor(self, context: TrainingContext) -> Reconstructor:
        """Build it once, seeded by ``context.generator("rar-reconstructor")`` (the global RNG stream,
        which drives dropout, is untouched), on the model's device."""
        if self.reconstructor is None:
            weight = self.output_weight()
            std = 0.02
            if isinstance(self.model, HFClassifier):
                std = float(getattr(self.model.hf_model.config, "initializer_range", std))
            with torch.random.fork_rng(devices=[]):
                head = Reconstructor(token_state_size(self.model), int(weight.shape[1]), int(weight.shape[0]))
            with torch.no_grad():
                draws = context.generator("rar-reconstructor")
                head.dense.weight.copy_(torch.randn(head.dense.weight.shape, generator=draws) * std)
                head.dense.bias.zero_()
            self.reconstructor = head.to(weight.device)
        return self.reconstructor

    def adversarial_forward(self, inputs: torch.Tensor, batch: Batch, t: int,
                            context: TrainingContext) -> tuple[torch.Tensor, Any]:
        if self.config.weight == 0:
            return self.model.forward_embeddings(inputs, batch).logits, None
        return token_forward(self.model, inputs, batch)

    def auxiliary_loss(self, t: int, aux: Any, batch: Batch, context: TrainingContext) -> torch.Tensor | None:
        if aux is None:
            return None
        head = self.ensure_reconstructor(context)
        real = batch["attention_mask"].bool()
        logits = head(aux[real], self.output_weight())
        loss = F.cross_entropy(logits, batch["input_ids"][real])
        self._sums["lr"] += float(loss.detach()) / self.steps
        self._sums["steps"] += 1.0 / self.steps
        return self.config.weight * loss / self.steps

    def on_epoch_start(self, context: TrainingContext) -> None:
        self._sums = {"lr": 0.0, "steps": 0.0}

    def on_epoch_end(self, context: TrainingContext) -> None:
        if self._sums["steps"]:
            context.log_metric("rar.reconstruction", self._sums["lr"] / self._sums["steps"], context.epoch + 1)

