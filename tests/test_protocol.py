"""Seeding and pinned attack sets."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import suite.run.protocol
from suite.data.examples import Example
from suite.core.errors import SuiteError
from suite.core.seeding import seed_everything
from suite.run.protocol import AttackSet, pin_attack_set, resolve_device


def _draws() -> tuple[list[float], list[float], list[float]]:
    return ([random.random() for _ in range(3)], np.random.rand(3).tolist(), torch.rand(3).tolist())


def test_seed_everything_repeats_draws() -> None:
    seed_everything(11)
    first = _draws()
    seed_everything(11)
    assert _draws() == first
    seed_everything(12)
    other = _draws()
    for a, b in zip(first, other):
        assert a != b
    assert torch.are_deterministic_algorithms_enabled()


def _examples(n: int) -> list[Example]:
    return [Example(id=f"test/{i}", texts=(f"t{i}",), label=i % 2) for i in range(n)]


@pytest.fixture
def no_pins(tmp_path, monkeypatch):
    monkeypatch.setattr(suite.run.protocol, "ATTACK_SET_DIR", tmp_path)
    return tmp_path


def test_pin_draws_size_ids_deterministically(no_pins) -> None:
    test = _examples(100)
    a = pin_attack_set("toy", test, size=10, seed=3)
    b = pin_attack_set("toy", test, size=10, seed=3)
    assert len(a.ids) == 10 == a.size and a.test_examples == 100
    assert len(set(a.ids)) == 10 and set(a.ids) <= {ex.id for ex in test}
    assert a.ids == b.ids and a.sha256 == b.sha256
    assert list(a.ids) == sorted(a.ids, key=lambda s: int(s.split("/")[1]))  # kept in test order
    c = pin_attack_set("toy", test, size=10, seed=4)
    assert c.ids != a.ids and c.sha256 != a.sha256


def test_pin_returns_all_ids_when_test_is_smaller(no_pins) -> None:
    test = _examples(7)
    pinned = pin_attack_set("toy", test, size=20, seed=3)
    assert pinned.ids == tuple(ex.id for ex in test)
    assert pinned.size == 7 and pinned.test_examples == 7
    assert pin_attack_set("toy", test, size=7, seed=99).ids == pinned.ids


def test_sha256_tracks_the_ids() -> None:
    a = AttackSet("toy", ("test/1", "test/2"), 0, 2, 10)
    b = AttackSet("toy", ("test/1", "test/3"), 0, 2, 10)
    assert a.sha256 != b.sha256
    assert len(a.sha256) == 64
    assert a.to_dict()["sha256"] == a.sha256 and a.to_dict()["ids"] == ["test/1", "test/2"]


def _write_pin(folder, pinned: AttackSet, **changes) -> None:
    data = {**pinned.to_dict(), **changes}
    (folder / f"{pinned.dataset}.json").write_text(json.dumps(data), encoding="utf-8")


def test_committed_pin_that_agrees_passes(no_pins) -> None:
    test = _examples(50)
    pinned = pin_attack_set("toy", test, size=10, seed=3)
    _write_pin(no_pins, pinned)
    assert pin_attack_set("toy", test, size=10, seed=3) == pinned


def test_committed_pin_that_disagrees_raises(no_pins) -> None:
    test = _examples(50)
    pinned = pin_attack_set("toy", test, size=10, seed=3)
    _write_pin(no_pins, pinned, sha256="f" * 64)
    with pytest.raises(SuiteError) as info:
        pin_attack_set("toy", test, size=10, seed=3)
    message = str(info.value)
    assert "the test split changed" in message
    assert str(no_pins / "toy.json") in message
    assert "ffffffffffff" in message and pinned.sha256[:12] in message
    # the check can be switched off (that is how pins are rewritten)
    assert pin_attack_set("toy", test, size=10, seed=3, check_committed=False) == pinned


def test_changed_test_split_is_caught_by_the_pin(no_pins) -> None:
    pinned = pin_attack_set("toy", _examples(50), size=10, seed=3)
    _write_pin(no_pins, pinned)
    with pytest.raises(SuiteError, match="the test split changed"):
        pin_attack_set("toy", _examples(51), size=10, seed=3)


def test_pin_for_another_seed_or_size_is_not_compared(no_pins) -> None:
    test = _examples(50)
    pinned = pin_attack_set("toy", test, size=10, seed=3)
    _write_pin(no_pins, pinned, sha256="f" * 64)
    assert pin_attack_set("toy", test, size=10, seed=4).seed == 4
    assert pin_attack_set("toy", test, size=12, seed=3).size == 12


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(SuiteError, match="device 'cuda' requested"):
            resolve_device("cuda")
