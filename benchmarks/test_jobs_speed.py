"""Wall time of a smoke-grid slice with ``suite run --jobs 2`` against ``--jobs 1``, in the same run.

Issue 11 asks ``--jobs 2`` to be at least 1.7x faster than ``--jobs 1`` on the smoke grid, with
the same metrics. Each mode runs ``suite run`` as its own process (both pay interpreter start-up
and imports; ``--jobs 2`` also its workers'), in a fresh working directory with a fresh tracking
store and a fresh attack cache (a warm cache would serve the second mode's attacks), with
``--workers 1`` in both (so the ratio measures jobs at once, not attack workers).

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_jobs_speed.py -q --benchmark-only

The slice is fixed (4 jobs: finetune x sst2_sentence, trec x cnn, lstm, with the profile's attacks
``pwws`` and ``deepwordbug``); ``SUITE_BENCH_JOBS_SELECTION="--all"`` runs the whole smoke grid
instead (same for both modes). ``--jobs 2`` needs 2 cores (the core budget): with fewer it is
skipped. The ``jobs=2`` case's ``extra_info`` holds ``speedup_vs_jobs_1`` (serial seconds /
parallel seconds); it asserts identical metrics (timings aside) and the same config hashes and
checkpoints, never a timing. Needs the offline mirrors (``$SUITE_DATA_DIR``, ``$SUITE_RESOURCES_DIR``).
"""
from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from suite.core import records
from suite.core.records import read_runs
from suite.run.parallel import available_cores

SLICE = ["--defense", "finetune", "--dataset", "sst2_sentence", "--dataset", "trec", "--backbone", "cnn",
         "--backbone", "lstm"]
TIMING = {records.MEAN_EPOCH_TIME, "epoch_time_s"}


def _selection() -> list[str]:
    chosen = os.environ.get("SUITE_BENCH_JOBS_SELECTION")
    return shlex.split(chosen) if chosen else list(SLICE)


def _comparable(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics without the timings (epoch seconds, attack seconds)."""
    return {k: v for k, v in metrics.items()
            if k not in TIMING and not k.endswith(f".{records.ATTACK_SECONDS}")}


@pytest.fixture(scope="module")
def grid_runs() -> dict[int, dict[str, Any]]:
    """jobs -> {"seconds": wall time, "runs": {label: RunRecord}}, filled by the benchmark."""
    return {}


@pytest.fixture(scope="module")
def mirrors() -> dict[str, str]:
    data = Path(os.environ.get("SUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    resources = Path(os.environ.get("SUITE_RESOURCES_DIR", data.parent / "resources"))
    if not (data / "sst2_sentence" / "MANIFEST.json").is_file():
        pytest.skip(f"dataset mirror not found at {data}; set SUITE_DATA_DIR")
    if not (resources / "glove_6B_50d" / "MANIFEST.json").is_file():
        pytest.skip(f"resource mirror (glove_6B_50d) not found at {resources}; set SUITE_RESOURCES_DIR")
    return {"SUITE_DATA_DIR": str(data), "SUITE_RESOURCES_DIR": str(resources), "SUITE_DATA_SOURCE": "mirror"}


def _run_grid(jobs: int, root: Path, mirrors: dict[str, str]) -> dict[str, Any]:
    """``suite run`` of the selection with ``--jobs jobs`` in a fresh ``root``; its wall time and runs."""
    root.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, **mirrors, "SUITE_CACHE_DIR": str(root / "cache"), "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "suite", "run", "--profile", "smoke", *_selection(), "--jobs", str(jobs),
               "--workers", "1", "--tracking-uri", uri]
    before = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, text=True, capture_output=True, timeout=3600)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - before  # the suite process and its (joined) worker processes
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}"
    runs = {r.label: r for r in read_runs(uri)}
    assert runs, f"no finished training run in {uri}"
    return {"seconds": seconds, "cpu_seconds": cpu, "runs": runs}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("jobs", [1, 2])
def test_grid_wall_time(benchmark, jobs: int, grid_runs: dict[int, dict[str, Any]], mirrors: dict[str, str],
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    if jobs > available_cores():
        pytest.skip(f"--jobs {jobs} needs {jobs} cores (the core budget); this machine gives {available_cores()}")

    def one_grid() -> None:  # one round: a second would find the first's finished jobs (fresh stores each)
        grid_runs[jobs] = _run_grid(jobs, tmp_path_factory.mktemp(f"jobs{jobs}") / "run", mirrors)

    benchmark.pedantic(one_grid, rounds=1, iterations=1)
    mine = grid_runs[jobs]
    # cores_busy (CPU seconds / wall seconds) well under --jobs says the machine was busy with other work
    benchmark.extra_info.update(jobs=jobs, workers=1, cores=available_cores(), selection=shlex.join(_selection()),
                                grid_jobs=len(mine["runs"]), wall_seconds=round(mine["seconds"], 2),
                                cpu_seconds=round(mine["cpu_seconds"], 2),
                                cores_busy=round(mine["cpu_seconds"] / mine["seconds"], 2))
    if jobs == 1:
        return
    if 1 not in grid_runs:  # run alone (-k): the serial run it is compared with, unbenchmarked
        grid_runs[1] = _run_grid(1, tmp_path_factory.mktemp("jobs1") / "run", mirrors)
    serial = grid_runs[1]
    assert set(mine["runs"]) == set(serial["runs"])
    for label, run in mine["runs"].items():
        reference = serial["runs"][label]
        assert run.config_hash == reference.config_hash, label
        assert run.checkpoint_sha256 == reference.checkpoint_sha256, label  # the same weights
        assert _comparable(run.metrics) == _comparable(reference.metrics), label
    ratio = serial["seconds"] / mine["seconds"]
    overhead = mine["cpu_seconds"] / serial["cpu_seconds"]  # what the worker processes cost on top (imports)
    benchmark.extra_info.update(serial_wall_seconds=round(serial["seconds"], 2), speedup_vs_jobs_1=round(ratio, 3),
                                cpu_ratio_vs_jobs_1=round(overhead, 3))
    print(f"\n--jobs 2: {mine['seconds']:.1f} s wall, {mine['cpu_seconds']:.1f} s CPU; --jobs 1: "
          f"{serial['seconds']:.1f} s wall, {serial['cpu_seconds']:.1f} s CPU; speed-up x{ratio:.2f}, "
          f"CPU x{overhead:.2f} ({len(mine['runs'])} jobs, {available_cores()} cores)")
