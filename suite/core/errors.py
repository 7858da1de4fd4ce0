"""User-facing errors: one line that says what went wrong, where, and how to fix it."""
from __future__ import annotations


class SuiteError(Exception):
    """An error caused by user input or the environment that the user can act on.

    The CLI prints ``str(error)`` as a single line and exits with ``exit_code``; it never
    shows a traceback for these.
    """

    exit_code = 2


class UnknownNameError(SuiteError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingDataError(SuiteError):
    """A dataset split or resource that is neither in the mirror nor reachable online."""


class IntegrityError(SuiteError):
    """A mirror file whose sha256 does not match its MANIFEST."""
