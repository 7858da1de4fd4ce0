"""What a ``suite`` process prints: the logging levels and warning filters that keep a run quiet.

A normal run prints the suite's own lines, its progress bars and its summary table; what the
libraries under it say while doing their usual work is hidden. ``suite -v`` shows all of it.
:func:`configure_console` is called by ``suite.cli.main`` and in every ``--jobs`` worker process
(``suite.run.parallel.configure_process``); attack worker processes copy the levels and filters
of their parent (``attacks.parallel.ConsoleState``). No library is patched: each message is hidden
through the knob its library offers.

Hidden without ``-v`` (message: mechanism):

- transformers' ``FutureWarning: Using `(PYTORCH_)TRANSFORMERS_CACHE` is deprecated`` (TextAttack
  0.3.11 sets the second when imported, ``attacks.resources`` pins the first): a warning filter.
- transformers' log lines, e.g. "Some weights of BertForSequenceClassification were not
  initialized ... You should probably TRAIN this model" (expected: the suite trains the head):
  ``TRANSFORMERS_VERBOSITY=error``, read when transformers configures its logger, and the level of
  the ``transformers`` logger when it is already imported. Same for ``datasets``.
- MLflow's INFO lines ("Creating initial MLflow database tables...", alembic's migrations):
  ``MLFLOW_LOGGING_LEVEL=WARNING``, read when mlflow is imported (it then sets its own logger
  level), and the ``mlflow`` logger's level when it is already imported.
- INFO lines of the other libraries (sentence_transformers' "Loading SentenceTransformer model",
  urllib3, httpx, filelock, ...): the root logger and those libraries' loggers at WARNING.
- TextAttack's "Unknown if model of class ... compatible with goal function" (logger
  ``textattack.shared.utils.install``, with its own handler, not propagating): that logger at
  ERROR. TextAttack sets it to INFO when it is imported, so ``attacks.recipes.build_attack`` sets
  it again once TextAttack is loaded, keyed on the level set here (``attacks`` may not import
  ``suite.run``); the same place hides NLTK's "[nltk_data] Error loading omw-1.4" lines.

With ``-v``: the root logger at INFO and every variable, level and filter above back to what it
was before this module changed it, so the libraries print what they would on their own.
``TOKENIZERS_PARALLELISM`` is set to ``false`` unless already set either way: with it unset, a
fork after a fast tokenizer ran prints the tokenizers fork warning (TextAttack's import sets it
to ``True`` regardless; the suite's worker processes are spawned, not forked).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

FORMAT = "%(message)s"
#: transformers/utils/hub.py warns on import when either variable is set
CACHE_WARNING = r"Using `(PYTORCH_)?TRANSFORMERS_CACHE` is deprecated"
#: variables libraries read when they are imported: name -> quiet value
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error", "MLFLOW_LOGGING_LEVEL": "WARNING"}
#: logger -> its level when quiet. Some libraries log through their own handler and do not
#: propagate (transformers, datasets, TextAttack): the root's level alone would not hold them.
QUIET_LOGGERS: dict[str, int] = {
    "transformers": logging.ERROR,  # set again on import from TRANSFORMERS_VERBOSITY
    "datasets": logging.ERROR,  # likewise, DATASETS_VERBOSITY
    "mlflow": logging.WARNING,  # likewise, MLFLOW_LOGGING_LEVEL
    "alembic": logging.WARNING,
    "textattack.shared.utils.install": logging.ERROR,  # TextAttack sets INFO on import: see attacks.recipes
    "sentence_transformers": logging.WARNING,
    "urllib3": logging.WARNING,
    "httpx": logging.WARNING,
    "filelock": logging.WARNING,
}

# What this module changed, to put back with verbose=True: variables it set, logger levels it replaced.
_env_set: dict[str, str] = {}
_levels_saved: dict[str, int] = {}
_ignoring_cache_warning = False


def configure_console(verbose: bool) -> None:
    """Set this process's logging levels, warning filters and library verbosity variables for a
    quiet run (``verbose=False``) or for ``-v`` (everything shown). Idempotent; a later call with
    the other value undoes the first."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=FORMAT)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        _show_everything()
    else:
        _hide_library_noise()


def _hide_library_noise() -> None:
    global _ignoring_cache_warning
    for name, value in QUIET_ENV.items():
        if name not in os.environ:
            os.environ[name] = _env_set[name] = value
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        _levels_saved.setdefault(name, logger.level)
        logger.setLevel(level)
    warnings.filterwarnings("ignore", message=CACHE_WARNING, category=FutureWarning)
    _ignoring_cache_warning = True


def _show_everything() -> None:
    global _ignoring_cache_warning
    for name, value in list(_env_set.items()):
        if os.environ.get(name) == value:
            del os.environ[name]
        del _env_set[name]
    for name, level in list(_levels_saved.items()):
        logging.getLogger(name).setLevel(level)
        del _levels_saved[name]
    if "textattack.shared.utils.install" in sys.modules:  # imported while quiet: its own INFO again
        logging.getLogger("textattack.shared.utils.install").setLevel(logging.INFO)
    if _ignoring_cache_warning:  # ahead of the "ignore" added then: Python's default action again
        warnings.filterwarnings("default", message=CACHE_WARNING, category=FutureWarning)
        _ignoring_cache_warning = False
