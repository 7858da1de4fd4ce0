"""A quiet terminal: what a normal ``suite`` process hides of its libraries' output, and that
``-v`` shows it again (``suite.run.console``, ``attacks.recipes.quiet_textattack``).

The noisy calls run in a fresh Python process each, because what they print depends on
process-wide state: which modules are imported, the logging levels, the warning filters, and
the stream NLTK bound as its error stream when first imported.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from attacks.recipes import TEXTATTACK_LOGGER, quiet_textattack
from conftest import _mirror_dir
from suite.run import console
from suite.run.console import QUIET_ENV, QUIET_LOGGERS, configure_console

REPO = Path(__file__).resolve().parents[1]
OMW = "omw-1.4"  # NLTK's "[nltk_data] Error loading omw-1.4" (offline) or "... Package omw-1.4 ..." (online)
TA_MODEL_LINE = "Unknown if model of class"
CACHE_LINE = "TRANSFORMERS_CACHE` is deprecated"

# Build stock PWWS as a run does (attacks.evaluation.prepare_attack) on a tiny word CNN and
# report TextAttack's logger level; argv[1]: "quiet" or "verbose".
BUILD_PWWS = """
import logging, sys
import torch
torch.set_num_threads(1)
from suite.run.console import configure_console
configure_console(sys.argv[1] == "verbose")
from attacks.evaluation import prepare_attack
from suite.models.text_processing import Vocabulary
from suite.models.word_models import KimCNN
torch.manual_seed(0)
model = KimCNN(Vocabulary.build(["a good movie", "a bad movie"], 0), 2, embedding_dim=8, max_length=10, num_filters=4)
model.backbone_name = "cnn"
prepare_attack("pwws", model.eval(), engine="textattack")
print("textattack level", logging.getLogger("textattack.shared.utils.install").level)
"""

# What a training job does first: open an MLflow sqlite store (its schema migrations log INFO)
# and load MiniLM with a new classification head (transformers warns the head is untrained).
LIBRARIES = """
import sys
from suite.run.console import configure_console
configure_console(sys.argv[1] == "verbose")
import mlflow
mlflow.MlflowClient(tracking_uri="sqlite:///" + sys.argv[2]).search_experiments()
from transformers import AutoModelForSequenceClassification
from suite.models.registry import minilm_path
AutoModelForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=2)
print("loaded")
"""


#: variables the suite sets itself (or that would change what the libraries print): not the caller's
DROPPED = ("NLTK_DATA", "TA_CACHE_DIR", *QUIET_ENV)


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this environment, less :data:`DROPPED`, plus ``env``)."""
    child = {k: v for k, v in os.environ.items() if k not in DROPPED}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**child, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **env}, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def attack_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SUITE_CACHE_DIR for the attack builds (the offline NLTK data is prepared once)."""
    return tmp_path_factory.mktemp("suite-cache")


@pytest.fixture
def pwws_env(attack_cache: Path) -> dict[str, str]:
    """What building PWWS offline needs: the resource mirror, Debian WordNet, a private cache."""
    resources = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
    if not (resources / "nltk_data" / "MANIFEST.json").is_file():
        pytest.skip(f"resource mirror at {resources} lacks nltk_data: set SUITE_RESOURCES_DIR")
    from attacks.resources import wordnet_dict_dir

    if wordnet_dict_dir()[0] is None:
        pytest.skip("Debian WordNet absent: run scripts/install_wordnet.sh as root")
    return {"SUITE_RESOURCES_DIR": str(resources), "SUITE_CACHE_DIR": str(attack_cache)}


def test_building_pwws_is_quiet_without_verbose(pwws_env: dict[str, str]) -> None:
    err = (done := _python(BUILD_PWWS, "quiet", **pwws_env)).stderr
    assert OMW not in err and "[nltk_data]" not in err, err
    assert TA_MODEL_LINE not in err and "textattack:" not in err, err
    assert CACHE_LINE not in err, err
    assert err.strip() == "", err  # nothing else either
    assert f"textattack level {logging.ERROR}" in done.stdout  # nor what TextAttack logs while attacking


def test_building_pwws_with_verbose_shows_what_the_libraries_say(pwws_env: dict[str, str]) -> None:
    err = (done := _python(BUILD_PWWS, "verbose", **pwws_env)).stderr
    assert f"textattack: {TA_MODEL_LINE}" in err, err
    assert f"[nltk_data] Error loading {OMW}" in err or OMW in err, err  # offline, or a download online
    assert CACHE_LINE in err, err
    assert f"textattack level {logging.INFO}" in done.stdout


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_mlflow_and_transformers_lines_only_with_verbose(verbose: bool, tmp_path: Path) -> None:
    done = _python(LIBRARIES, "verbose" if verbose else "quiet", str(tmp_path / "mlflow.db"))
    assert "loaded" in done.stdout
    noise = ("Creating initial MLflow database tables", "Some weights of BertForSequenceClassification")
    if verbose:
        assert all(line in done.stderr for line in noise), done.stderr
    else:
        assert done.stderr.strip() == "", done.stderr


# --- in this process: the settings themselves ----------------------------------------------------------

@pytest.fixture
def saved_console(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's console settings before the test, put back after it (pytest restores the
    warning filters); the module's record of what it changed starts empty (``suite.cli.main``,
    run by other tests, calls configure_console too)."""
    for var in (*QUIET_ENV, "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    levels = {name: logging.getLogger(name or None).level for name in ["", *QUIET_LOGGERS]}
    handlers = list(logging.root.handlers)
    record = dict(console._env_set), dict(console._levels_saved), console._ignoring_cache_warning
    console._env_set.clear()
    console._levels_saved.clear()
    yield
    logging.root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    console._env_set.clear()
    console._env_set.update(record[0])
    console._levels_saved.clear()
    console._levels_saved.update(record[1])
    console._ignoring_cache_warning = record[2]


def _cache_warning_shown() -> bool:
    with warnings.catch_warnings(record=True) as seen:  # keeps the filters, records what they let through
        warnings.warn("Using `TRANSFORMERS_CACHE` is deprecated and will be removed", FutureWarning)
    return bool(seen)


def test_configure_console_quiet_then_verbose_restores(saved_console: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")  # the user's choice is kept
    logging.getLogger("alembic").setLevel(logging.DEBUG)
    logging.getLogger("sentence_transformers").setLevel(logging.NOTSET)  # inherits the root's
    warnings.resetwarnings()  # no filters but configure_console's (pytest's ignore FutureWarning)
    assert _cache_warning_shown()
    configure_console(False)
    configure_console(False)  # idempotent
    assert logging.getLogger().level == logging.WARNING
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    assert logging.getLogger("transformers").level == logging.ERROR
    assert logging.getLogger(TEXTATTACK_LOGGER).level == logging.ERROR
    assert not logging.getLogger("sentence_transformers").isEnabledFor(logging.INFO)
    assert not _cache_warning_shown()

    configure_console(True)
    assert logging.getLogger().level == logging.INFO
    assert "TRANSFORMERS_VERBOSITY" not in os.environ and os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    assert logging.getLogger("alembic").level == logging.DEBUG  # back to what it was, not the quiet level
    assert logging.getLogger("sentence_transformers").isEnabledFor(logging.INFO)
    assert _cache_warning_shown()


def test_a_failed_build_shows_what_it_printed(capfd: pytest.CaptureFixture[str], saved_console: None) -> None:
    logging.getLogger().setLevel(logging.WARNING)  # not verbose
    with quiet_textattack():
        os.write(2, b"hidden while building\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), quiet_textattack():
        os.write(2, b"why it failed\n")
        raise RuntimeError("build failed")
    assert capfd.readouterr().err == "why it failed\n"
    with quiet_textattack(verbose=True):
        os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
