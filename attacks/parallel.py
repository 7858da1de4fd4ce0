"""Attacking the examples of one attack in worker processes (``run_attack(..., workers=N)``).

Why processes: a TextAttack search is sequential Python around small model calls, so one
process uses about one core whatever torch's thread count; N processes at one torch thread
each attack N examples at a time.

How: the parent saves the model once, in the suite's checkpoint format (``model.json`` +
``model.safetensors``, no pickle), to a temporary folder, and starts N processes with the
``spawn`` start method (never ``fork``: a forked torch / OpenMP runtime can deadlock). Each
worker takes the parent's environment, warning filters and logger levels, sets one torch
thread and the protocol's determinism settings, loads the model with
``load_classifier(folder, device, sha256=...)``, builds the attack itself with
``attacks.evaluation.prepare_attack`` (same attack, engine, budget, batch size; checked
against the parent's settings), says it is ready, and then attacks small chunks of examples
from a shared queue (dynamic distribution: a slow example does not hold up the others; the
parent hands out a chunk each time a worker asks for one), sending each record back as soon
as it is done. Every example is attacked from its own seed
(``attacks.evaluation.attack_example``), so a record does not depend on which process attacked
it, nor on what that process attacked before.

A worker needs seconds of CPU to start (importing torch and TextAttack, loading the attack's
resources), so the parent begins by attacking chunks itself, at one torch thread like the
workers, and starts them only once the examples left would keep it busy for longer than
:data:`START_AFTER_S`: a small attack set is done without workers (as fast as ``workers=1``),
a large one starts them after its first chunk. The parent then only hands out chunks and
keeps records: attacking on while the workers start was measured slower (it competes with
their start for the cores they were given).

Only the parent touches the cache, the progress bar and the caller's callback (``keep``,
called once per record as it arrives). A worker that dies (killed, out of memory, a crash in
native code) or fails is one line naming what is cached; the records that arrived before are
kept, so a re-run attacks only the rest.

Importing this module imports nothing heavy: a worker sets the parent's environment before
torch, TextAttack or transformers load.
"""
from __future__ import annotations

import importlib
import io
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import traceback
import warnings
from collections import deque
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from suite.core.errors import SuiteError

if TYPE_CHECKING:
    from suite.data.examples import Example
    from suite.models.base import TextClassifier

POLL_S = 0.5  # how often the parent checks that its workers are alive while it waits for a record
JOIN_S = 30.0  # how long a terminated worker gets to exit
#: with ``local``, the workers start once the examples left would keep the parent busy for longer
#: than this: one worker's start took 8 CPU-seconds here (import torch 1 s, TextAttack 4 s,
#: building PWWS 3 s), more while the other workers start too. The parent then goes on attacking
#: beside ``workers - 1`` spawned processes (it is one of the ``workers``), so a start costs a core
#: that was idle rather than the parent's time
START_AFTER_S = 10.0
#: variables a worker takes from the parent explicitly (a spawned process inherits the environment
#: as it is when it starts; this keeps the offline, data, cache and progress-bar settings certain)
ENV_PREFIXES = ("SUITE_", "HF_", "TRANSFORMERS_", "TQDM_", "NLTK_", "TA_", "TORCH_", "XDG_", "CUBLAS_")


@dataclass(frozen=True)
class WorkerJob:
    """What every worker needs to rebuild the parent's attack (sent once, at start)."""

    attack: str
    engine: str
    query_budget: int | None
    batch_size: int | None
    seed: int
    column_names: tuple[str, ...]
    description: str  # str() of the parent's attacker: a worker's must be the same
    settings: dict[str, Any]  # the parent's settings (the attack hash's input): a worker's must agree
    model_folder: str = ""
    model_sha256: str = ""
    device: str = "cpu"
    env: dict[str, str] = field(default_factory=dict)
    console: "ConsoleState | None" = None
    # modules that define the model's classes (a defense's wrapper registers itself on import:
    # ``suite.models.wrapped``), imported by name before the worker loads the model
    model_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsoleState:
    """The parent's logging levels and warning filters, for its workers to print what it would.

    ``levels``: logger name ("" the root) -> (level, disabled), for every logger the parent has
    (a worker applies those it has too). ``filters``: ``warnings.filters`` as plain data (patterns as strings,
    categories as ``"module:qualname"``), so sending it imports nothing before the worker's
    environment is set.
    """

    levels: dict[str, tuple[int, bool]]
    filters: tuple[tuple[str, str, str, str, int], ...]

    @classmethod
    def capture(cls) -> "ConsoleState":
        loggers = [("", logging.root), *((name, logger) for name, logger in logging.root.manager.loggerDict.items()
                                         if isinstance(logger, logging.Logger))]
        levels = {name: (logger.level, logger.disabled) for name, logger in loggers}
        filters = tuple((action, _pattern(message), f"{category.__module__}:{category.__qualname__}", _pattern(module),
                         lineno) for action, message, category, module, lineno in warnings.filters)
        return cls(levels, filters)

    def apply_filters(self) -> None:
        """The parent's warning filters, in its order (a category that cannot be imported is left out)."""
        warnings.resetwarnings()
        for action, message, category, module, lineno in reversed(self.filters):
            owner, _, name = category.partition(":")
            try:
                cls = importlib.import_module(owner)
                for part in name.split("."):
                    cls = getattr(cls, part)
            except (ImportError, AttributeError):
                continue
            warnings.filterwarnings(action, message, cls, module, lineno)  # type: ignore[arg-type]

    def apply_levels(self) -> None:
        """The parent's levels of the loggers this process has (again after TextAttack's import,
        which sets its own)."""
        existing = logging.root.manager.loggerDict
        for name, (level, disabled) in self.levels.items():
            if name == "" or isinstance(existing.get(name), logging.Logger):
                logger = logging.getLogger(name or None)
                logger.setLevel(level)
                logger.disabled = disabled


def _pattern(value: Any) -> str:
    """A warning filter's message / module pattern as a string (it is a compiled regex, a string or None)."""
    return str(getattr(value, "pattern", value) or "")


@contextmanager
def _silenced() -> Iterator[None]:
    """No warnings or log records: what loading the model and building the attack say, the parent
    (which just did the same) has said already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def worker_env() -> dict[str, str]:
    """The parent's environment variables that reach the workers (:data:`ENV_PREFIXES`)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def chunk_size(n_examples: int, workers: int) -> int:
    """Examples per task: small (1-4), so the last tasks finish close together."""
    return max(1, min(4, n_examples // (workers * 8)))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _worker(job: WorkerJob, tasks: Any, results: Any) -> None:
    """A worker process: rebuild model and attack, then attack chunks from ``tasks`` until ``None``.

    Messages to the parent, each ``(kind, pid, payload)``: ``ready`` once the attack is built,
    ``record`` per example, ``want`` (another chunk) after each chunk, ``error`` (a line) when it
    cannot go on; it then exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    os.environ.update(job.env)
    try:
        if job.console is not None:
            job.console.apply_filters()
            job.console.apply_levels()
        with _silenced():
            import torch

            torch.set_num_threads(1)
            from suite.core.seeding import deterministic_mode

            deterministic_mode()
            from attacks.evaluation import attack_example, prepare_attack
            from attacks.resources import prepare_textattack_env
            from suite.models.loading import load_classifier

            for module in job.model_modules:
                importlib.import_module(module)
            model = load_classifier(Path(job.model_folder), job.device, sha256=job.model_sha256,
                                    fix="the parent's temporary copy of the model changed; re-run the attack")
            prepare_textattack_env()
            import textattack  # noqa: F401  (its log handler is bound to the real stderr, not the one below)

            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # NLTK's download attempts
                attacker, _, settings = prepare_attack(job.attack, model, job.query_budget, job.batch_size,
                                                       job.engine, announce=False)
        if job.console is not None:
            job.console.apply_levels()
        differs = sorted(k for k, v in settings.items() if job.settings.get(k) != v)
        if str(attacker) != job.description:
            differs.append("the attack's description")
        if differs:
            raise SuiteError(f"a worker process built attack {job.attack} with other settings than the parent "
                             f"({', '.join(differs)}); re-run with workers=1")
        results.put(("ready", os.getpid(), None))
        while True:
            examples = tasks.get()
            if examples is None:
                return
            for example in examples:
                record = attack_example(attacker, example, seed=job.seed, column_names=job.column_names)
                results.put(("record", os.getpid(), record))
            results.put(("want", os.getpid(), None))
    except SuiteError as exc:
        results.put(("error", os.getpid(), str(exc)))
    except Exception as exc:  # one line to the parent, which stops the pool
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}{_where(exc)}"))


def model_modules(model: Any) -> tuple[str, ...]:
    """The modules defining ``model`` and the models it wraps (``.inner``), outside ``suite.models``."""
    found: list[str] = []
    while model is not None:
        name = type(model).__module__
        if not name.startswith("suite.models") and name not in found:
            found.append(name)
        model = getattr(model, "inner", None)
    return tuple(found)


def _death(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def worth_starting(elapsed_s: float, attacked: int, left: int) -> bool:
    """Whether workers pay off: the ``left`` examples would keep this process busy for longer than
    :data:`START_AFTER_S`, at the ``elapsed_s / attacked`` it has taken per example so far."""
    return attacked > 0 and left > 0 and elapsed_s / attacked * left > START_AFTER_S


def attack_in_workers(job: WorkerJob, model: "TextClassifier", examples: Sequence["Example"], *, workers: int,
                      keep: Callable[[dict[str, Any]], None], desc: str, cache_path: Path, cached_before: int,
                      local: Callable[["Example"], dict[str, Any]] | None = None) -> None:
    """Attack ``examples`` (all uncached) with up to ``workers`` spawned worker processes (no more
    than there are chunks left when they start), calling ``keep(record)`` in this process for each record as it arrives (any order).

    ``local(example)``, when given, attacks one example in this process. The parent then starts
    by attacking chunks itself and starts ``workers - 1`` processes only once the examples left
    would take it longer than :data:`START_AFTER_S` (:func:`worth_starting`: a worker needs
    seconds to start), going on with chunks of its own beside them; a small attack set is done
    without workers. ``local`` runs at one torch thread, as the workers do, so the records are
    the same whoever attacks an example. Without ``local`` ``workers`` processes start at once
    and attack every example.

    ``cache_path`` and ``cached_before`` (records cached before this call) only word the error
    raised when a worker dies or fails: a one-line ``SuiteError`` saying how many examples are
    cached and to re-run. Workers left running are terminated on any error or interrupt.
    """
    import time

    import torch
    from tqdm.auto import tqdm

    from suite.data.mirror import sha256_of
    from suite.models.loading import WEIGHTS

    examples = list(examples)
    if not examples:
        return
    size = chunk_size(len(examples), min(workers, len(examples)))
    todo = deque(examples[i:i + size] for i in range(0, len(examples), size))
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    received = 0
    procs: list[Any] = []

    def start(stack: ExitStack) -> None:
        nonlocal job
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suite-attack-model-")))
        model.save(tmp)
        job = replace(job, model_folder=str(tmp), model_sha256=sha256_of(tmp / WEIGHTS), device=str(model.device),
                      env=worker_env(), console=ConsoleState.capture(), model_modules=model_modules(model))
        spawned = workers - 1 if local is not None else workers  # with ``local`` this process is one of them
        procs.extend(ctx.Process(target=_worker, args=(job, tasks, results), name=f"suite-attack-worker-{i}",
                                 daemon=True) for i in range(max(1, min(spawned, len(todo)))))  # no idle worker
        for process in procs:
            process.start()

    def give() -> None:  # a chunk to whichever worker takes it first; nothing left: a stop
        tasks.put(todo.popleft() if todo else None)

    def failed(why: str) -> SuiteError:
        return SuiteError(f"{desc}: {why}; {cached_before + received} example(s) are cached in {cache_path} and "
                          f"{len(examples) - received} are not: re-run to attack the rest")

    def kept(record: dict[str, Any]) -> None:
        nonlocal received
        keep(record)
        received += 1
        bar.update()

    def handle(message: tuple[str, Any, Any]) -> None:
        kind, pid, payload = message
        if kind == "record":
            kept(payload)
        elif kind == "ready":  # two chunks: one to attack, one to take as soon as it is done
            give()
            give()
        elif kind == "want":
            give()
        elif kind == "error":
            drain()
            raise failed(f"worker process {pid} failed ({payload})")

    def drain() -> None:  # what already arrived: its records are kept
        while True:
            try:
                message = results.get(timeout=POLL_S)
            except queue.Empty:
                return
            if message[0] == "record":
                kept(message[2])

    threads = torch.get_num_threads()
    bar = tqdm(total=len(examples), desc=desc, leave=False)
    with ExitStack() as stack:
        try:
            torch.set_num_threads(1)  # the workers' count: the same records whoever attacks an example
            if local is None:
                start(stack)
            began, mine = time.perf_counter(), 0
            while received < len(examples):
                if local is not None and todo and (not procs or workers > len(procs)):
                    # attacking here: alone until workers would pay off, then beside them
                    for example in todo.popleft():
                        kept(local(example))
                        mine += 1
                    if not procs and worth_starting(time.perf_counter() - began, mine, sum(map(len, todo))):
                        start(stack)
                    while procs:  # what the workers sent meanwhile (they keep one chunk in hand)
                        try:
                            handle(results.get_nowait())
                        except queue.Empty:
                            break
                    continue
                try:
                    message = results.get(timeout=POLL_S)
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead or all(p.exitcode is not None for p in procs):
                        drain()
                        if received < len(examples):
                            raise failed(f"worker process {dead[0].pid} {_death(dead[0])}" if dead
                                         else "the worker processes exited early") from None
                    continue
                handle(message)
            for _ in procs:  # done: every worker gets a stop and exits on its own (cleanly: a worker's
                tasks.put(None)  # own semaphores, e.g. tqdm's lock, would leak if it were terminated)
            for process in procs:
                process.join(JOIN_S)
        finally:
            torch.set_num_threads(threads)
            bar.close()
            for process in procs:
                if process.is_alive():
                    process.terminate()  # failed or interrupted: a worker still starting is not needed
            for process in procs:
                if process.pid is not None:  # started
                    process.join(JOIN_S)
            tasks.cancel_join_thread()  # chunks nobody will take must not block this process's exit
            tasks.close()
            results.close()
