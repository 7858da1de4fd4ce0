"""Options and end-of-run summaries of the benchmarks (epoch time, attack engine)."""
from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backbone", default="cnn", help="backbone to time (cnn, lstm, minilm-l6, ...)")
    parser.addoption("--bench-examples", type=int, default=256, help="training examples per epoch")
    parser.addoption("--bench-rounds", type=int, default=3, help="epochs timed per defense")
    parser.addoption("--engine-examples", type=int, default=0,
                     help="sst2_sentence test examples for the attack-engine benchmark (0: the full split)")
    parser.addoption("--minilm-examples", type=int, default=50, help="test examples for the MiniLM attack benchmark")
    parser.addoption("--wetar-validation-rows", type=int, default=256,
                     help="WETAR's validation mini-batch rows (Table 3: 256 on SST-2 with training batch 32)")
    parser.addoption("--adv-steps", type=int, default=None,
                     help="set every defense's ascent steps (perturbation.steps) to K, e.g. 5 as in adaptive_at Table 10")


_MEDIANS = pytest.StashKey[dict]()
_ENGINE = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def engine_speed(pytestconfig: pytest.Config) -> dict:
    """label -> {examples, seconds[, forward_seconds]} of the attack-engine benchmark, printed at the end."""
    return pytestconfig.stash.setdefault(_ENGINE, {})


def _engine_summary(terminalreporter, config: pytest.Config) -> None:
    timed = {k: v for k, v in config.stash.get(_ENGINE, {}).items() if "seconds" in v}
    if not timed:
        return
    terminalreporter.section("attack throughput (examples/s) and ratios measured in this run")
    for label, t in timed.items():
        extra = f"  forward-bound {t['examples'] / t['forward_seconds']:.1f}" if t.get("forward_seconds") else ""
        terminalreporter.write_line(f"{label:32s} {t['examples'] / t['seconds']:8.1f}{extra}")
    pairs = [("pwws cnn engine", "pwws cnn stock"), ("pwws cnn engine", "pwws cnn stock-plain"),
             ("pwws cnn stock", "pwws cnn stock-plain"), ("pwws minilm-l6 engine", "pwws minilm-l6 stock"),
             ("pwws cnn workers=2", "pwws cnn workers=1")]
    for fast, slow in pairs:
        if fast in timed and slow in timed:
            terminalreporter.write_line(f"{fast} vs {slow}: x{timed[slow]['seconds'] / timed[fast]['seconds']:.2f}")


@pytest.fixture(scope="session")
def epoch_medians(pytestconfig: pytest.Config) -> dict[str, float]:
    """defense -> median seconds per epoch, filled by the benchmark, printed at the end."""
    return pytestconfig.stash.setdefault(_MEDIANS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    _engine_summary(terminalreporter, config)
    medians = config.stash.get(_MEDIANS, {})
    if "finetune" not in medians:
        return
    base = medians["finetune"]
    terminalreporter.section(f"seconds per epoch relative to finetune ({config.getoption('--backbone')})")
    for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
        terminalreporter.write_line(f"{name:20s} {seconds:8.3f} s  x{seconds / base:5.2f}")
