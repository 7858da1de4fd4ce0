"""Running the job grid: one job after another, or ``--jobs N`` at once in worker processes.

The core budget
    ``--jobs J`` (jobs of the grid at once, default 1) and ``--workers W`` (processes attacking
    one model's attack set, default ``max(1, cores // J)``) share the machine's cores
    (:func:`available_cores`: the CPUs this process may run on, ``os.sched_getaffinity``): at most
    ``J x W`` attack processes run at once, each with one torch thread, so ``J x W`` may not exceed
    the cores (:func:`core_budget` says so in one line). The budget is not ``J`` pools of ``W``
    on top of the defaults: with ``--jobs 2`` on 8 cores each job attacks with 4 workers.

Jobs in worker processes (``J > 1``)
    Each job runs in a process of the multiprocessing "spawn" context (never fork: torch and
    OpenMP state is not fork-safe), one torch thread each unless the job's profile sets
    ``train.cpu_threads``. A worker runs jobs one after another until the grid is done; a job's
    error (a :class:`~suite.core.errors.SuiteError` or a bug) comes back as one line and the grid
    goes on; a worker that dies (killed, out of memory) fails only the job it was running and is
    replaced. The outcomes are returned in grid order. Every job seeds itself
    (``seed_everything(job.seed)``) and runs under the protocol's determinism settings, so its
    metrics do not depend on which process runs it or what ran before it: the same as a serial
    run whenever the thread count is the same (the smoke profile pins ``cpu_threads: 1``).

How MLflow writes stay safe with the SQLite default
    * The parent opens the store first (:class:`~suite.run.tracking.Tracker`: schema migrations of
      a new store and the experiment's creation, under the store lock), before any worker starts;
      each worker then opens its own ``Tracker`` on the same URI, finding the experiment made.
    * The processes write to one SQLite file through their own connections. SQLite serialises
      writers with its file lock and MLflow's sessions wait for it (``PRAGMA busy_timeout`` 20 s);
      each write is one short transaction (a metric, a tag batch, a run), milliseconds long.
    * Artifacts go to each run's own folder (``<store folder>/mlruns/<experiment>/<run id>/``);
      no two processes write one file.
    * The per-job lock (``Tracker.job_lock``) keeps two processes from training one job: a grid
      that lists a job twice, or a second ``suite run`` on the same store, waits and reuses it.
    * Worker processes leave the attack cache to their own jobs: its files are per checkpoint
      and attack hash, so two different jobs never append to one.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from attacks.engine import ENGINES as ATTACK_ENGINES  # ("fast", "textattack"); importing it loads no attack
from suite.core.errors import SuiteError

if TYPE_CHECKING:  # the runner imports torch: only the processes that run jobs load it
    from suite.run.config import Job
    from suite.run.runner import JobResult
    from suite.run.tracking import Tracker

DEFAULT_ATTACK_ENGINE = "fast"  # the suite's engine: stock TextAttack's records, faster


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class CoreBudget(NamedTuple):
    """How ``jobs`` jobs at once, each attacking with ``workers`` processes, share ``cores`` cores."""

    jobs: int
    workers: int
    cores: int

    def describe(self) -> str:
        return f"{self.jobs} job(s) at once x {self.workers} attack worker(s) each, of {self.cores} core(s)"


def core_budget(jobs: int | None, workers: int | None, cores: int) -> CoreBudget:
    """Resolve ``--jobs`` / ``--workers`` (None: not given) against ``cores``.

    ``jobs`` defaults to 1 and ``workers`` to ``max(1, cores // jobs)``; a budget of more than
    ``cores`` processes (``jobs x workers > cores``) is a one-line SuiteError that says how to fit.
    """
    if cores < 1:
        raise SuiteError(f"core budget: {cores} cores available; run on a machine with at least one core")
    for flag, value in (("--jobs", jobs), ("--workers", workers)):
        if value is not None and value < 1:
            raise SuiteError(f"core budget: {flag} must be >= 1, got {value}")
    j = 1 if jobs is None else jobs
    w = max(1, cores // j) if workers is None else workers
    if j * w > cores:
        given = " and ".join(f"{flag} {value}" for flag, value in (("--jobs", jobs), ("--workers", workers))
                             if value is not None)
        fit = (f"--jobs {j} --workers {max(1, cores // j)}" if cores >= j
               else f"--jobs {cores} --workers 1")
        verb = "needs" if jobs is None or workers is None else "need"
        default = "" if workers is None else " (or leave --workers out: it defaults to cores // jobs)"
        raise SuiteError(f"core budget: {given} {verb} {j} x {w} = {j * w} processes but this machine gives "
                         f"{cores} core(s); keep --jobs x --workers <= {cores}, e.g. {fit}{default}")
    return CoreBudget(j, w, cores)


@dataclass(frozen=True)
class JobOptions:
    """What ``suite run`` passes to every job (:func:`suite.run.runner.run_job`)."""

    force: bool = False
    attacks: tuple[str, ...] | None = None  # None: the profile's; (): none
    query_budget: int | None = None
    workers: int = 1
    attack_engine: str = DEFAULT_ATTACK_ENGINE


@dataclass
class JobOutcome:
    """One job of the grid: its result, or the one line that says why it failed (``detail``: the traceback)."""

    index: int  # in the grid, from 0
    job: "Job"
    result: "JobResult | None" = None
    error: str | None = None
    detail: str | None = field(default=None, repr=False)


def run_one(index: int, job: "Job", tracker: "Tracker", options: JobOptions) -> JobOutcome:
    """Run one job; any error becomes its outcome's one line (the grid goes on; finished jobs are logged)."""
    from suite.run.failures import failure_line
    from suite.run.runner import run_job

    try:
        result = run_job(job, tracker, force=options.force,
                         attacks=None if options.attacks is None else list(options.attacks),
                         query_budget=options.query_budget, workers=options.workers,
                         attack_engine=options.attack_engine)
    except SuiteError as exc:
        return JobOutcome(index, job, error=str(exc))
    except Exception as exc:  # a bug or the machine (disk full): this job failed
        return JobOutcome(index, job, error=failure_line(exc), detail=traceback.format_exc())
    return JobOutcome(index, job, result=result)


Callback = Callable[[int, "Job"], None]


def run_jobs(jobs: Sequence["Job"], tracker: "Tracker", options: JobOptions, *, parallel: int = 1,
             verbose: bool = False, on_start: Callback | None = None,
             on_finish: Callable[[JobOutcome], None] | None = None) -> list[JobOutcome]:
    """Run ``jobs``, ``parallel`` at once (1: in this process); the outcomes in grid order.

    ``on_start(index, job)`` is called when a job starts, ``on_finish(outcome)`` when it ends
    (in the order jobs finish). With ``parallel > 1`` the workers open their own Tracker on
    ``tracker``'s store and experiment (which this process has already opened and created).
    """
    if parallel <= 1 or len(jobs) <= 1:
        outcomes = []
        for index, job in enumerate(jobs):
            if on_start:
                on_start(index, job)
            outcome = run_one(index, job, tracker, options)
            if on_finish:
                on_finish(outcome)
            outcomes.append(outcome)
        return outcomes
    pool = _Pool(min(parallel, len(jobs)), tracker.tracking_uri, tracker.experiment, options, verbose)
    return pool.run(list(jobs), on_start, on_finish)


# --- the worker processes ----------------------------------------------------------------------


def _worker_main(conn: Any, tracking_uri: str, experiment: str, options: JobOptions, verbose: bool) -> None:
    """A ``--jobs`` worker: receive ``(index, job)``, send back its :class:`JobOutcome`; ``None`` ends it."""
    # Before anything imports tqdm or torch: several processes' progress bars on one terminal
    # would overwrite each other (the parent shows one bar over the jobs), and one thread each.
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from suite.run.console import configure_console

        configure_console(verbose)  # what the parent prints, the worker prints (and hides)
        import torch

        tracker = None
        while True:
            task = conn.recv()
            if task is None:
                return
            index, job = task
            torch.set_num_threads(1)  # the runner sets the profile's train.cpu_threads, if any, on CPU
            if tracker is None:
                try:
                    tracker = _open_tracker(tracking_uri, experiment)
                except Exception as exc:  # the parent opened it a moment ago: a store that went away
                    from suite.run.failures import failure_line

                    conn.send(JobOutcome(index, job, error=failure_line(exc), detail=traceback.format_exc()))
                    continue
            conn.send(run_one(index, job, tracker, options))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):  # Ctrl-C (the parent reports it) or the parent is gone
        return


def _open_tracker(tracking_uri: str, experiment: str) -> "Tracker":
    """This worker's own Tracker on the parent's store. Workers open it one at a time, waiting
    silently on a lock of their own: the store lock inside ``Tracker`` would otherwise print a
    "waiting for another suite process" line for each sibling that opens it at the same moment."""
    from filelock import FileLock

    from suite.core.store import StoreLocks
    from suite.run.tracking import Tracker

    with FileLock(str(StoreLocks(tracking_uri).folder / "jobs-workers-open.lock")):
        return Tracker(tracking_uri, experiment=experiment)


class _Worker:
    def __init__(self, context: Any, args: tuple[Any, ...]) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, *args), name="suite-job", daemon=False)
        self.process.start()  # not a daemon: its attack (--workers) starts processes of its own
        child.close()
        self.task: tuple[int, Any] | None = None


class _Pool:
    """``size`` spawned worker processes; each gets the next job when it is free."""

    def __init__(self, size: int, tracking_uri: str, experiment: str, options: JobOptions, verbose: bool) -> None:
        import multiprocessing

        self.size = size
        self.context = multiprocessing.get_context("spawn")
        self.args = (tracking_uri, experiment, options, verbose)

    def run(self, jobs: list["Job"], on_start: Callback | None,
            on_finish: Callable[[JobOutcome], None] | None) -> list[JobOutcome]:
        from multiprocessing.connection import wait

        pending = deque(enumerate(jobs))
        outcomes: dict[int, JobOutcome] = {}
        workers: list[_Worker] = []

        def dispatch(worker: _Worker) -> None:
            if not pending:
                worker.task = None
                _send(worker, None)
                return
            worker.task = pending.popleft()
            if on_start:
                on_start(*worker.task)
            _send(worker, worker.task)  # a worker gone meanwhile: its sentinel says so next

        def finish(outcome: JobOutcome) -> None:
            outcomes[outcome.index] = outcome
            if on_finish:
                on_finish(outcome)

        try:
            for _ in range(self.size):
                workers.append(_Worker(self.context, self.args))
                dispatch(workers[-1])
            while any(w.task is not None for w in workers):
                busy = [w for w in workers if w.task is not None]
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for worker in busy:
                    if worker.conn not in ready and worker.process.sentinel not in ready:
                        continue
                    outcome = _receive(worker)
                    if outcome is None:  # the process is gone without an answer
                        if worker.process.is_alive():
                            continue  # a spurious wake-up: nothing to read yet
                        index, job = worker.task
                        finish(JobOutcome(index, job, error=_died(worker.process.exitcode)))
                        worker.task = None
                        workers.remove(worker)
                        if pending:  # its replacement takes the next job
                            workers.append(_Worker(self.context, self.args))
                            dispatch(workers[-1])
                        continue
                    finish(outcome)
                    dispatch(worker)
        finally:
            _stop(workers)
        return [outcomes[i] for i in range(len(jobs))]


def _receive(worker: _Worker) -> JobOutcome | None:
    try:
        return worker.conn.recv() if worker.conn.poll() else None
    except (EOFError, OSError):
        return None


def _send(worker: _Worker, message: Any) -> None:
    try:
        worker.conn.send(message)
    except (BrokenPipeError, OSError):  # already gone
        pass


def _died(exitcode: int | None) -> str:
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with code {exitcode}"
    return (f"its --jobs worker process {how} (out of memory?); re-run the same command: finished jobs "
            "are reused, this one starts again (fewer --jobs need less memory)")


def _stop(workers: list[_Worker], grace_s: float = 15.0) -> None:
    """Ask every worker to end, wait ``grace_s`` (a Ctrl-C lets them mark their runs KILLED), then end them."""
    import time

    for worker in workers:
        _send(worker, None)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.terminate()  # a run it left RUNNING is marked KILLED by the next run of the job
            worker.process.join(5)
        worker.conn.close()
    sys.stderr.flush()
