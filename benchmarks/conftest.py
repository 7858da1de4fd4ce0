"""Options of the epoch-time benchmark."""
from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backbone", default="cnn", help="backbone to time (cnn, lstm, minilm-l6, ...)")
    parser.addoption("--bench-examples", type=int, default=256, help="training examples per epoch")
    parser.addoption("--bench-rounds", type=int, default=3, help="epochs timed per defense")
    parser.addoption("--adv-steps", type=int, default=None,
                     help="set every defense's ascent steps (perturbation.steps) to K, e.g. 5 as in adaptive_at Table 10")


_MEDIANS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def epoch_medians(pytestconfig: pytest.Config) -> dict[str, float]:
    """defense -> median seconds per epoch, filled by the benchmark, printed at the end."""
    return pytestconfig.stash.setdefault(_MEDIANS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    medians = config.stash.get(_MEDIANS, {})
    if "finetune" not in medians:
        return
    base = medians["finetune"]
    terminalreporter.section(f"seconds per epoch relative to finetune ({config.getoption('--backbone')})")
    for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
        terminalreporter.write_line(f"{name:20s} {seconds:8.3f} s  x{seconds / base:5.2f}")
