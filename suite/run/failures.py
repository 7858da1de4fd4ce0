"""One line for a failure that is not a ``SuiteError`` (a full disk, a bug), so the grid goes on.

``suite run`` records the job (or the attack) as failed with this line, runs the rest of the
grid and exits non-zero; ``-v`` shows the traceback. Nothing already finished is undone: a
training run ends FINISHED before its attacks start, each attack is its own child run, and the
per-example attack cache keeps every example written before the failure.
"""
from __future__ import annotations

import errno

from suite.core.errors import SuiteError


def failure_line(exc: BaseException) -> str:
    """What went wrong, where, and what to do, in one line."""
    if isinstance(exc, SuiteError):
        return str(exc)
    text = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, OSError):
        where = f" writing {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return (f"no space left on device{where}; free disk space and re-run (finished runs, attacks and "
                    "cached attack examples are kept)")
        what = exc.strerror or text or exc.__class__.__name__
        return f"{what}{where} ({exc.__class__.__name__}); fix it and re-run (finished runs are kept)"
    return (f"unexpected {exc.__class__.__name__}: {text}; re-run with -v for the traceback "
            "(the job is recorded as failed; finished runs are kept)")
