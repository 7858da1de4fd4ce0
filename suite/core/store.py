"""Where an MLflow tracking store lives, whether it can be written, and the file locks beside it.

* A local store (``sqlite:///...`` file, ``file:`` / plain-path folder) is checked for
  writability before MLflow opens it: MLflow retries a SQLite engine it cannot create for about
  100 s; the check fails in milliseconds with one line.
* An HTTP store is opened with MLflow's own retry settings turned down
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT``, unless the user set
  them): a server that is not there is one line in seconds, not after ~250 s of retries. Requests
  after the store opened keep MLflow's defaults (a long run rides out a server hiccup).
* Locks (``filelock``): ``<store>.locks/store.lock`` serialises opening the store (a new SQLite
  store's schema migrations, creating an experiment) and ``<store>.locks/job-<config hash>.lock``
  is held while one job trains and is attacked, so two identical ``suite run`` processes never
  both train it; different jobs run in parallel. An OS file lock dies with its process, so a run
  left RUNNING while nobody holds its job's lock was left by a killed process. A remote store
  (HTTP, a database server) is locked in ``$SUITE_CACHE_DIR/locks/``: that protects one machine
  only (``StoreLocks.shared`` is False).
"""
from __future__ import annotations

import hashlib
import os
import sys
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

from suite.core.errors import SuiteError
from suite.core.paths import suite_cache_dir

# MLflow's HTTP client settings while a store is opened (the user's own environment wins)
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def local_store_path(uri: str) -> Path | None:
    """The SQLite file or file-store folder of ``uri``; None for a remote or in-memory store."""
    if not uri:
        return None
    if is_sqlite(uri):
        rest = uri[len("sqlite:"):]
        if not rest.startswith("///"):
            return None
        path = rest[3:].split("?", 1)[0]  # sqlite:///relative.db, sqlite:////absolute.db
        return None if path in ("", ":memory:") else Path(path).expanduser().resolve()
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path)).resolve()
    if "://" not in uri:  # a plain path: MLflow's file store
        return Path(uri).expanduser().resolve()
    return None


def default_artifact_location(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``<store folder>/mlruns``,
    beside the database (never the working directory of the run that happened to create it)."""
    path = local_store_path(uri) if is_sqlite(uri) else None
    return (path.parent / "mlruns").as_uri() if path is not None else None


def _unwritable(uri: str, where: Path, why: str) -> SuiteError:
    hint = " (the default store is ./mlflow.db in the current directory)" if not os.environ.get(
        "MLFLOW_TRACKING_URI") and where == Path.cwd().resolve() else ""
    return SuiteError(f"cannot write the MLflow tracking store {uri}: {where} {why}{hint}; make it writable or "
                      "pass --tracking-uri sqlite:////a/writable/folder/mlflow.db")


def check_writable(uri: str) -> None:
    """A one-line SuiteError, at once, when the local store of ``uri`` cannot be written."""
    path = local_store_path(uri)
    if path is None:
        return
    folder = path.parent if is_sqlite(uri) else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(uri, folder, f"cannot be created ({exc.strerror or exc.__class__.__name__})") from None
    if not folder.is_dir():
        raise _unwritable(uri, folder, "is not a folder")
    if is_sqlite(uri) and path.is_dir():
        raise _unwritable(uri, path, "is a folder, not a SQLite file")
    for target in [folder] + ([path] if is_sqlite(uri) and path.exists() else []):
        if not os.access(target, os.W_OK):
            raise _unwritable(uri, target, "is not writable")


def check_readable(uri: str) -> None:
    """A one-line SuiteError when the local store of ``uri`` does not exist (reading must not create it)."""
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise SuiteError(f"no MLflow tracking store at {path} (not found); run 'suite run' there first or pass "
                         "--tracking-uri")


@contextmanager
def quick_connect(uri: str) -> Iterator[None]:
    """While opening an HTTP store: MLflow's retries off and a short timeout (:data:`QUICK_HTTP`)."""
    if not uri.startswith(("http://", "https://")):
        yield
        return
    added = [k for k in QUICK_HTTP if k not in os.environ]
    os.environ.update({k: QUICK_HTTP[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class StoreLocks:
    """The file locks of one tracking store (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        from filelock import FileLock

        self._lock_class = FileLock
        path = local_store_path(uri)
        self.shared = path is not None  # every process that can open the store sees these locks
        if path is None:
            self.folder = suite_cache_dir() / "locks" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        else:
            self.folder = path.with_name(path.name + ".locks")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(uri, self.folder.parent, f"cannot hold the lock folder {self.folder.name} "
                              f"({exc.strerror or exc.__class__.__name__})") from None

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.lock"

    @contextmanager
    def hold(self, name: str, waiting: str) -> Iterator[Path]:
        """Hold lock ``name``; if another process holds it, say ``waiting`` (one line) and wait."""
        from filelock import Timeout

        lock = self._lock_class(str(self._path(name)))
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                print(f"suite: {waiting} (lock {lock.lock_file})", file=sys.stderr, flush=True)
                lock.acquire()
        except OSError as exc:
            raise SuiteError(f"cannot take the lock {self._path(name)} ({exc.strerror or exc.__class__.__name__}); "
                             f"make {self.folder} writable") from None
        try:
            yield self._path(name)
        finally:
            lock.release()

    def store(self) -> AbstractContextManager[Path]:
        """Held while the store is opened: schema migrations of a new SQLite store, experiment creation."""
        return self.hold("store", "waiting for another suite process to finish opening the tracking store")

    def job(self, config_hash: str, label: str) -> AbstractContextManager[Path]:
        """Held while job ``config_hash`` (``label``) trains and is attacked."""
        return self.hold(f"job-{config_hash}", f"{label}: another suite process is running this job; waiting "
                                               "for it (then its finished run is reused)")
