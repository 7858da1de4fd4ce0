"""``GreedyWordSwapWIR`` (word-importance ranking, then greedy swaps) with stock TextAttack's records.

The search is TextAttack 0.3.11's ``GreedyWordSwapWIR._get_index_order`` and
``perform_search`` step for step, on :class:`attacks.engine.text.Text` strings instead of one
``AttackedText`` per candidate, with the goal function emulated by
:class:`attacks.engine.goal.GoalEmulator`. TextAttack's own parts do the work that decides
what a candidate is:

* ``Attack.get_indices_to_order`` and each transformation's pre-transformation constraints
  (on the one stock ``AttackedText`` of the current text, rebuilt by stock code at each
  accepted swap and checked against the engine's string);
* each ``WordSwap``'s ``_get_replacement_words`` (WordNet, character edits with their
  ``numpy``/``random`` draws in stock order, neighbour lists, homoglyphs);
* constraints the engine does not reimplement (part of speech, sentence encoders) run as
  TextAttack objects on stock ``AttackedText`` candidates, in stock order and batches;
  ``LevenshteinEditDistance`` is computed here with the same ``editdistance.eval``.

Whatever the engine cannot represent (multi-column inputs, a swap whose new word does not
tokenise to itself) raises :class:`NotRepresentable`; the caller re-runs that example on
stock TextAttack from the same RNG state.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.functional import softmax

from attacks.engine.goal import Candidate, GoalEmulator, Scored
from attacks.engine.text import NotRepresentable, Text, spans_of, words_of

# len(attack_attrs) of stock AttackedTexts (the goal-function cache compares texts and this count):
INITIAL_ATTRS = 2  # original_index_map, modified_indices
REPLACED_ATTRS = 4  # + newly_modified_indices, previous_attacked_text (replace_word_at_index)
TRANSFORMED_ATTRS = 5  # + last_transformation (Transformation.__call__)


class GreedyWIRSearch:
    """One configured search; :meth:`run` attacks one example."""

    def __init__(self, attack: Any, plan: Any) -> None:
        self.attack = attack
        self.search = attack.search_method
        self.plan = plan  # attacks.engine.support.Plan: transformations, cheap/opaque constraints
        self._allowed_key: int | None = None
        self._allowed_memo: dict[int, set[int]] = {}
        self._memo: dict[int, dict[str, list[str]]] = {}
        self.deterministic = all(t.deterministic for t in plan.transformations)

    # --- candidates ---------------------------------------------------------------------------

    def transformations(self, current: Text, current_stock: Any, original: Text, original_stock: Any,
                        index: int) -> list[Candidate]:
        """``Attack.get_transformations(current, original_text=original, indices_to_modify=[index])``."""
        return self._build(current, current_stock, original, original_stock, index,
                           self._draw(current, current_stock, index))

    def _draw(self, current: Text, current_stock: Any, index: int) -> list[tuple[Any, str]]:
        """(transformation, new word) of each candidate at ``index``, in stock order: the
        ``_get_replacement_words`` calls (and a random transformation's draws) stock makes."""
        word = current.words[index]
        return [(transformation, replacement) for transformation in self.plan.transformations
                if index in self._allowed(current_stock, transformation)
                for replacement in self._replacements(transformation, word)]

    def _build(self, current: Text, current_stock: Any, original: Text, original_stock: Any, index: int,
               draws: list[tuple[Any, str]]) -> list[Candidate]:
        """The drawn words as candidate texts of ``current``, de-duplicated, filtered and sorted as stock."""
        plan = self.plan
        word = current.words[index]
        built = [(current.replaced(index, r), t, r) for t, r in draws if r != word]
        if plan.composite:  # CompositeTransformation: first of each text (equal attrs count)
            seen: set[str] = set()
            built = [b for b in built if not (b[0] in seen or seen.add(b[0]))]
        built = [b for b in built if b[0] != current.text]
        if plan.opaque:
            return self._filter_stock(built, current_stock, original_stock, index)
        for constraint in plan.cheap:
            reference = original.text if constraint.compare_against_original else current.text
            built = [b for b in built if constraint.accepts(b[0], reference)]
        built.sort(key=lambda b: b[0])
        return [Candidate(text, TRANSFORMED_ATTRS, None, new) for text, _, new in built]

    def _replacements(self, transformation: Any, word: str) -> list[str]:
        """``transformation._get_replacement_words(word)``; memoised across examples for a
        deterministic transformation (WordNet, neighbour lists), drawn afresh for a random one
        (character edits: the same ``numpy``/``random`` draws, in the same order, as stock)."""
        if not transformation.deterministic:
            return transformation._get_replacement_words(word)
        memo = self._memo.setdefault(id(transformation), {})
        if word not in memo:
            memo[word] = list(transformation._get_replacement_words(word))
        return memo[word]

    def _allowed(self, current_stock: Any, transformation: Any) -> set[int]:
        """The indices ``transformation``'s pre-transformation constraints leave on the current text
        (stock ``Transformation.__call__(..., return_indices=True)``), once per current text."""
        key = (id(current_stock), id(transformation))
        if self._allowed_key != key[0]:
            self._allowed_key, self._allowed_memo = key[0], {}
        if key[1] not in self._allowed_memo:
            self._allowed_memo[key[1]] = transformation(
                current_stock, pre_transformation_constraints=self.attack.pre_transformation_constraints,
                return_indices=True)
        return self._allowed_memo[key[1]]

    def _filter_stock(self, built: list[tuple[str, Any, str]], current_stock: Any, original_stock: Any,
                      index: int) -> list[Candidate]:
        """Stock ``Attack._filter_transformations_uncached`` on stock candidates (opaque constraints)."""
        candidates, words = [], {}
        for text, transformation, replacement in built:
            stock = current_stock.replace_word_at_index(index, replacement)
            stock.attack_attrs["last_transformation"] = transformation
            if stock.text != text:
                raise NotRepresentable("engine and stock texts differ")
            candidates.append(stock)
            words[id(stock)] = replacement
        for constraint in self.attack.constraints:
            if not candidates:
                break
            reference = original_stock if constraint.compare_against_original else current_stock
            candidates = constraint.call_many(candidates, reference)
        candidates.sort(key=lambda t: t.text)
        return [Candidate(c.text, len(c.attack_attrs), c, words[id(c)]) for c in candidates]

    # --- search -------------------------------------------------------------------------------

    def run(self, goal: GoalEmulator, initial: Scored, initial_stock: Any) -> Scored:
        """``GreedyWordSwapWIR.perform_search`` from ``initial``: the final result."""
        self._allowed_key, self._allowed_memo = None, {}
        original = Text.of(initial_stock.text)
        if original.words != tuple(initial_stock.words):
            raise NotRepresentable("engine and stock words differ")
        index_order, search_over = self._index_order(goal, original, initial_stock)
        ahead = _Lookahead(self, goal, [int(x) for x in index_order])
        try:
            return self._greedy(goal, original, initial_stock, initial, index_order, search_over, ahead)
        finally:
            ahead.undo_unused_draws()

    def _greedy(self, goal: GoalEmulator, original: Text, initial_stock: Any, initial: Scored,
                index_order: np.ndarray, search_over: bool, ahead: "_Lookahead") -> Scored:
        current, current_stock, cur = original, initial_stock, initial
        i = 0
        while i < len(index_order) and not search_over:
            index = int(index_order[i])
            i += 1
            draws = ahead.draws_for(i - 1, current, current_stock, original)
            candidates = self._build(current, current_stock, original, initial_stock, index, draws)
            if not candidates:
                continue
            results, search_over = goal.get_results(candidates)
            results = sorted(results, key=lambda r: -r.score)
            if not results[0].score > cur.score:
                continue
            cur = results[0]
            current, current_stock = self._accept(current, current_stock, index, cur)
            if cur.succeeded:
                best = cur
                max_similarity = -float("inf")
                for result in results:
                    if not result.succeeded or result.payload is None:
                        break
                    similarity = result.payload.attack_attrs.get("similarity_score")
                    if similarity is None:
                        break
                    if similarity > max_similarity:
                        max_similarity, best = similarity, result
                return best
        return cur

    def _accept(self, current: Text, current_stock: Any, index: int, result: Scored) -> tuple[Text, Any]:
        """The accepted candidate as the next current text, engine and stock side (stock code
        rebuilds it; a swap that does not keep the word count and order is not represented)."""
        if words_of(result.word) != (result.word,):
            raise NotRepresentable("a swap's new word is not one TextAttack word")
        stock = result.payload if result.payload is not None else current_stock.replace_word_at_index(index, result.word)
        words = current.words[:index] + (result.word,) + current.words[index + 1:]
        if stock.text != result.text or tuple(stock.words) != words:
            raise NotRepresentable("an accepted swap changes the tokenisation")
        return Text(result.text, words, spans_of(result.text, words)), stock

    def _index_order(self, goal: GoalEmulator, initial: Text, initial_stock: Any) -> tuple[np.ndarray, bool]:
        """``GreedyWordSwapWIR._get_index_order`` for the ``unk``, ``weighted-saliency`` and ``delete`` rankings."""
        search = self.search
        _, indices_to_order = self.attack.get_indices_to_order(initial_stock)
        if search.truncate_words_to is not None:
            indices_to_order = sorted(indices_to_order)[: search.truncate_words_to]
        method = search.wir_method
        if method in ("unk", "weighted-saliency"):
            leave_one = [Candidate(initial.replaced(i, search.unk_token), REPLACED_ATTRS) for i in indices_to_order]
        elif method == "delete":
            leave_one = [Candidate(initial.replaced(i, ""), REPLACED_ATTRS) for i in indices_to_order]
        else:  # guarded by attacks.engine.support
            raise NotRepresentable(f"word-importance ranking {method!r}")
        if method == "weighted-saliency" and goal.merged and self.deterministic:
            # every candidate the ranking can score, in one call (generating them draws nothing)
            goal.prefetch([c.text for c in leave_one] + [
                c.text for idx in indices_to_order
                for c in self.transformations(initial, initial_stock, initial, initial_stock, idx)])
        leave_one_results, search_over = goal.get_results(leave_one)
        if method == "weighted-saliency":
            saliency_scores = np.array([r.score for r in leave_one_results])
            softmax_saliency_scores = softmax(torch.Tensor(saliency_scores), dim=0).numpy()
            delta_ps: list[Any] = []
            for idx in indices_to_order:
                if search_over:
                    delta_ps = delta_ps + [0.0] * (len(softmax_saliency_scores) - len(delta_ps))
                    break
                candidates = self.transformations(initial, initial_stock, initial, initial_stock, idx)
                if not candidates:
                    delta_ps.append(0.0)
                    continue
                swap_results, search_over = goal.get_results(candidates)
                score_change = [r.score for r in swap_results]
                if not score_change:
                    delta_ps.append(0.0)
                    continue
                delta_ps.append(np.max(score_change))
            index_scores = softmax_saliency_scores * np.array(delta_ps)
        else:
            index_scores = np.array([r.score for r in leave_one_results])
        return np.array(indices_to_order)[(-index_scores).argsort()], search_over


class _Lookahead:
    """Candidates of the next greedy steps scored with the current step's (merged schedule).

    A step's words depend only on the word at its index (untouched until then) and, for a
    random transformation, on the draws before it; the pre-transformation constraints allowed
    here (repeat, stopword, input column) do not change when another index is swapped. So the
    words of steps ``i+1, i+2, ...`` can be drawn at step ``i`` in stock's order and their texts
    scored in the same model call while it has room (the call is a chunk of the wrapper's
    ``batch_size`` rows anyway). A swap at step ``i`` rebuilds the later texts from the same words
    on the new text; when the search ends, the draws stock would not have made are undone
    (the RNG states are restored to before the first unused one).
    """

    SAFE_PRE = ("RepeatModification", "StopwordModification", "InputColumnModification")

    def __init__(self, search: GreedyWIRSearch, goal: GoalEmulator, order: list[int]) -> None:
        self.search, self.goal, self.order = search, goal, order
        self.drawn: dict[int, list[tuple[Any, str]]] = {}  # step -> draws
        self.states: dict[int, tuple[Any, Any, Any]] = {}  # step -> RNG states before its draws
        pre = search.attack.pre_transformation_constraints
        self.enabled = (goal.merged and not search.plan.opaque
                        and all(type(c).__name__ in self.SAFE_PRE for c in pre))
        self.room = getattr(goal.model, "batch_size", 1)

    def draws_for(self, step: int, current: Text, current_stock: Any, original: Text) -> list[tuple[Any, str]]:
        search = self.search
        draws = self.drawn.pop(step, None)
        self.states.pop(step, None)
        if draws is None:
            draws = search._draw(current, current_stock, self.order[step])
        if not self.enabled:
            return draws
        texts = [current.replaced(self.order[step], r) for _, r in draws]
        nxt = step + 1
        while nxt < len(self.order) and len(texts) < self.room:
            if nxt not in self.drawn:
                self.states[nxt] = _rng_state()
                self.drawn[nxt] = search._draw(current, current_stock, self.order[nxt])
            more = [current.replaced(self.order[nxt], r) for _, r in self.drawn[nxt]]
            if len(texts) + len(more) > self.room:  # only what fits the call's own chunk
                break
            texts += more
            nxt += 1
        if nxt > step + 1:
            self.goal.prefetch(texts)
        return draws

    def undo_unused_draws(self) -> None:
        if self.states:
            _set_rng_state(self.states[min(self.states)])
            self.states.clear()
            self.drawn.clear()


def _rng_state() -> tuple[Any, Any, Any]:
    import random

    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_state(state: tuple[Any, Any, Any]) -> None:
    import random

    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def score_initial(goal: GoalEmulator, text: str) -> Scored:
    results, _ = goal.get_results([Candidate(text, INITIAL_ATTRS)])
    return results[0]


__all__ = ("GreedyWIRSearch", "score_initial")
