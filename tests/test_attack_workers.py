"""``run_attack(..., workers=N)`` (attacks.parallel) and ``engine=`` (attacks.evaluation.prepare_attack):
N worker processes give the records of one process, resume from the same cache, survive a killed
worker without losing what was cached, and the engine used is part of the attack's settings."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from suite.core.errors import SuiteError
# the tiny trained Kim-CNN and the private attack environment of tests/test_attacks.py (resource_mirror: conftest)
from test_attacks import _attack_env, module_cache, trained_cnn  # noqa: F401

KWARGS: dict[str, Any] = dict(seed=2024, checkpoint_sha256="c" * 64, attack_set_sha256="d" * 64)


@pytest.fixture(scope="module", autouse=True)
def _nltk_readers_stay_readable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """NLTK keeps the corpus readers it has loaded (stopwords, WordNet) for the whole process and
    refuses to read outside ``nltk.data.path``; this module and tests/test_attacks.py each build
    NLTK data in their own module cache, so whichever runs second would read the first one's
    folder. The session's temporary root stays authorised, for every module, in either order."""
    import nltk.data

    root = str(tmp_path_factory.getbasetemp())
    if root not in nltk.data.path:
        nltk.data.path.append(root)


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _cached_lines(root: Path, attack_hash: str) -> list[dict[str, Any]]:
    path = root / ("c" * 16) / f"{attack_hash}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_workers_give_the_records_of_one_process_and_resume_from_the_same_cache(
        trained_cnn, resource_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``run_attack``: the parent attacks the first chunk itself (here: workers start right
    after it), the workers the rest; in the next tests every record comes from a worker."""
    from attacks import parallel
    from attacks.evaluation import run_attack

    monkeypatch.setattr(parallel, "START_AFTER_S", 0.0)  # start the workers after the first chunk, not never
    torch.set_num_threads(1)
    model, test = trained_cnn
    examples = test[:16]
    run = dict(KWARGS, engine="textattack")

    one = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "one", workers=1, **run)
    assert one.metrics.successful > 0 and one.metrics.n == 16  # the attack really did something

    two = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "two", workers=2, **run)
    assert two.attack_hash == one.attack_hash and two.settings == one.settings
    assert "workers" not in json.dumps(two.settings)
    assert [r["id"] for r in two.records] == [ex.id for ex in examples]  # attack-set order, whatever the arrival
    assert _comparable(two.records) == _comparable(one.records)
    assert two.metrics == one.metrics and two.resumed == 0
    assert sorted(r["id"] for r in _cached_lines(tmp_path / "two", two.attack_hash)) == sorted(ex.id for ex in examples)

    seen: list[dict[str, Any]] = []
    part = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "part", workers=2, stop_after=5,
                      on_record=seen.append, **run)
    assert part.attack_hash == one.attack_hash
    assert [r["id"] for r in part.records] == [ex.id for ex in examples[:5]]  # the first 5 uncached, as workers=1
    assert sorted(r["id"] for r in seen) == sorted(r["id"] for r in part.records)
    assert sorted(r["id"] for r in _cached_lines(tmp_path / "part", part.attack_hash)) == \
        sorted(r["id"] for r in part.records)

    rest = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "part", workers=2, **run)
    assert rest.resumed == 5 and len(_cached_lines(tmp_path / "part", rest.attack_hash)) == 16
    assert _comparable(rest.records) == _comparable(one.records)

    again = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "part", workers=2, **run)
    assert again.resumed == 16 and again.records == rest.records  # timings too: nothing re-attacked
    assert multiprocessing.active_children() == []  # no worker left behind


def _worker_job(model: Any, name: str, engine: str = "textattack") -> Any:
    from attacks.evaluation import prepare_attack, worker_job

    attack, _, settings = prepare_attack(name, model, engine=engine)
    settings = {**settings, "seed": KWARGS["seed"], "attack_set_sha256": KWARGS["attack_set_sha256"],
                "textattack_attack": str(attack)}
    return worker_job(name, attack, settings, engine=engine, query_budget=None, batch_size=settings["score_batch"],
                      seed=KWARGS["seed"], column_names=("text_a", "text_b"))


def test_the_fast_engine_in_workers_gives_the_records_it_gives_here(trained_cnn, resource_mirror: Path,
                                                                      tmp_path: Path) -> None:
    """The default engine: each worker builds its own (``prepare_attack(engine="fast")``)."""
    from attacks.evaluation import run_attack
    from attacks.parallel import attack_in_workers

    torch.set_num_threads(1)
    model, test = trained_cnn
    examples = test[16:26]
    here = run_attack("pwws", model, examples, cache_root=tmp_path / "here", **dict(KWARGS, engine="fast"))
    got: list[dict[str, Any]] = []
    attack_in_workers(_worker_job(model, "pwws", engine="fast"), model, examples, workers=2, keep=got.append,
                      desc="attack pwws", cache_path=tmp_path / "unused", cached_before=0)
    assert here.metrics.successful > 0
    assert _comparable(sorted(got, key=lambda r: r["id"])) == _comparable(sorted(here.records, key=lambda r: r["id"]))


def test_the_workers_alone_give_the_records_of_one_process_and_a_killed_one_loses_nothing_cached(
        trained_cnn, resource_mirror: Path, tmp_path: Path) -> None:
    """``attack_in_workers`` without ``local``: every record comes from a worker process."""
    from attacks.cache import AttackCache
    from attacks.evaluation import run_attack
    from attacks.parallel import attack_in_workers

    torch.set_num_threads(1)
    model, test = trained_cnn
    examples = test[:16]
    run = dict(KWARGS, engine="textattack")
    reference = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "ref", **run)
    assert reference.metrics.successful > 0
    job = _worker_job(model, "deepwordbug")

    got: list[dict[str, Any]] = []
    attack_in_workers(job, model, examples, workers=2, keep=got.append, desc="attack deepwordbug",
                      cache_path=tmp_path / "unused", cached_before=0)
    assert _comparable(sorted(got, key=lambda r: r["id"])) == \
        _comparable(sorted(reference.records, key=lambda r: r["id"]))
    assert multiprocessing.active_children() == []  # no worker left behind

    cache = AttackCache(tmp_path / "cache", KWARGS["checkpoint_sha256"], reference.attack_hash)
    killed: list[int] = []

    def keep_and_kill(record: dict[str, Any]) -> None:  # the first record in: SIGKILL our workers
        cache.append(record)
        if not killed:
            for worker in multiprocessing.active_children():
                killed.append(worker.pid)
                os.kill(worker.pid, signal.SIGKILL)

    with pytest.raises(SuiteError) as err:
        attack_in_workers(job, model, examples, workers=2, keep=keep_and_kill, desc="attack deepwordbug",
                          cache_path=cache.path, cached_before=0)
    message = str(err.value)
    assert len(killed) == 2 and "\n" not in message
    assert any(f"worker process {pid} was killed by SIGKILL" in message for pid in killed), message
    cached = cache.load()
    assert 1 <= len(cached) < 16
    assert f"{len(cached)} example(s) are cached in {cache.path} and {16 - len(cached)} are not: re-run" in message
    assert multiprocessing.active_children() == []  # none left behind

    done = run_attack("deepwordbug", model, examples, cache_root=tmp_path / "cache", workers=2, **run)
    assert done.resumed == len(cached) and done.attack_hash == reference.attack_hash
    assert _comparable(done.records) == _comparable(reference.records)


def test_the_engine_used_is_in_the_settings_and_the_hash(trained_cnn, resource_mirror: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    from attacks.engine import ENGINE_NAME, ENGINE_VERSION, engine_attack
    from attacks.evaluation import attack_config_hash, prepare_attack

    model, _ = trained_cnn
    stock, spec, stock_settings = prepare_attack("deepwordbug", model, engine="textattack")
    assert stock_settings["engine"] == {"name": "textattack", "version": importlib.metadata.version("textattack")}
    assert "suite: note" not in capsys.readouterr().err

    fast, _, fast_settings = prepare_attack("deepwordbug", model, engine="fast")
    _, note = engine_attack(stock, spec)
    if note is None:  # the engine covers it: its own name and version, so another cache
        assert fast_settings["engine"] == {"name": ENGINE_NAME, "version": ENGINE_VERSION}
        assert attack_config_hash(fast_settings) != attack_config_hash(stock_settings)
    else:  # not (yet): stock TextAttack, said once on stderr
        assert fast_settings == stock_settings and f"suite: note: {note}" in capsys.readouterr().err
    assert {k: v for k, v in fast_settings.items() if k != "engine"} == \
        {k: v for k, v in stock_settings.items() if k != "engine"}
    assert str(fast) == str(stock)  # the configuration the records follow


def test_an_attack_the_engine_does_not_cover_runs_stock_and_says_so_once(
        trained_cnn, resource_mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attacks.evaluation import prepare_attack

    model, _ = trained_cnn
    capsys.readouterr()
    first, _, settings = prepare_attack("gene-offline", model, engine="fast")  # a genetic search: not covered
    assert settings["engine"]["name"] == "textattack"
    err = capsys.readouterr().err
    assert err.startswith("suite: note: attack gene-offline: ") and err.count("\n") == 1
    prepare_attack("gene-offline", model, engine="fast")
    assert capsys.readouterr().err == ""  # once per process
    assert type(first).__module__.startswith("textattack")


def test_bad_engine_and_worker_counts_are_one_line_errors(trained_cnn, resource_mirror: Path,
                                                          tmp_path: Path) -> None:
    from attacks.evaluation import prepare_attack, run_attack

    model, test = trained_cnn
    with pytest.raises(SuiteError, match=r"unknown attack engine 'turbo'; use one of: fast, textattack$"):
        prepare_attack("pwws", model, engine="turbo")
    for bad in (0, -2, True, 1.5):
        with pytest.raises(SuiteError, match=r"^workers must be a whole number >= 1, got"):
            run_attack("pwws", model, test[:2], cache_root=tmp_path, workers=bad, **KWARGS)
    assert not any(tmp_path.iterdir())  # nothing was attacked or cached


def test_a_worker_that_cannot_rebuild_the_attack_is_one_line(trained_cnn, resource_mirror: Path,
                                                             tmp_path: Path) -> None:
    """A worker whose attack differs from the parent's (here: the parent claims a query budget)
    attacks nothing: its records could not be cached under the parent's attack hash."""
    import dataclasses

    from attacks.parallel import attack_in_workers

    model, test = trained_cnn
    job = _worker_job(model, "deepwordbug")
    job = dataclasses.replace(job, settings={**job.settings, "query_budget": 5})
    got: list[dict[str, Any]] = []
    with pytest.raises(SuiteError) as err:
        attack_in_workers(job, model, test[:4], workers=2, keep=got.append, desc="attack deepwordbug",
                          cache_path=tmp_path / "c.jsonl", cached_before=3)
    assert got == [] and "\n" not in str(err.value)
    assert "built attack deepwordbug with other settings than the parent (query_budget); re-run with workers=1" \
        in str(err.value)
    assert str(err.value).endswith(f"3 example(s) are cached in {tmp_path / 'c.jsonl'} and 4 are not: "
                                   "re-run to attack the rest")
    assert multiprocessing.active_children() == []
