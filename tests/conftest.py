"""Shared fixtures: the offline mirror, a tiny fake mirror, and an isolated MLflow cwd."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

# nltk binds sys.stderr as the default error stream of nltk.download when it is first imported.
# TextAttack's PWWS calls nltk.download("omw-1.4") (which fails offline and prints why); if nltk
# were first imported inside a test that captures output (capsys), later tests would print to
# that test's closed stream ("I/O operation on closed file"). Import it once, session-wide.
import nltk  # noqa: F401,E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mirror_dir(env_var: str, sub: str) -> Path:
    value = os.environ.get(env_var)
    return Path(value).expanduser().resolve() if value else (REPO_ROOT.parent / "shared" / sub).resolve()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach the network from a test (a hub fallback would hang offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Undo process-wide torch settings a run changes (threads, oneDNN, determinism)."""
    import torch

    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real offline dataset mirror (SUITE_DATA_DIR, else ../shared/datasets); skip if absent."""
    data = _mirror_dir("SUITE_DATA_DIR", "datasets")
    if not (data / "sst2_sentence" / "MANIFEST.json").is_file():
        pytest.skip(f"offline dataset mirror not found at {data}: set SUITE_DATA_DIR to the mirror "
                    "(e.g. ../shared/datasets)")
    monkeypatch.setenv("SUITE_DATA_DIR", str(data))
    monkeypatch.setenv("SUITE_DATA_SOURCE", "mirror")
    resources = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
    if resources.is_dir():
        monkeypatch.setenv("SUITE_RESOURCES_DIR", str(resources))
    return data


@pytest.fixture
def resources(mirror: Path) -> Path:
    """The resource mirror (GloVe); skip if absent."""
    path = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
    if not (path / "glove_6B_50d" / "MANIFEST.json").is_file():
        pytest.skip(f"resource mirror (glove_6B_50d) not found at {path}: set SUITE_RESOURCES_DIR")
    return path


@pytest.fixture
def resource_mirror(mirror: Path) -> Path:
    """The resource mirror with the files the offline variants read; skip if absent."""
    path = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
    needed = ["nltk_data/MANIFEST.json", "counterfitted_neighbors/counterfitted_neighbors.json.gz",
              "textattack/intentional_homoglyphs.txt"]
    if not all((path / n).is_file() for n in needed):
        pytest.skip(f"resource mirror at {path} lacks one of {needed}: set SUITE_RESOURCES_DIR")
    return path


def write_split(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write ``rows`` as gzipped JSON lines; return the file's sha256."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_rows(n: int, prefix: str = "text", num_labels: int = 2) -> list[dict[str, Any]]:
    return [{"text": f"{prefix} number {i}", "label": i % num_labels, "idx": i} for i in range(n)]


MirrorBuilder = Callable[..., Path]


@pytest.fixture
def tmp_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MirrorBuilder:
    """Build a tiny layout-A mirror under ``tmp_path/mirror`` and point SUITE_DATA_DIR at it.

    ``build(folder, {split: rows}, sha256={split: digest})`` writes ``<folder>/<split>.jsonl.gz``
    and a MANIFEST.json recording the true digest unless ``sha256`` overrides it; it returns
    the dataset folder.
    """
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("SUITE_DATA_DIR", str(root))
    monkeypatch.setenv("SUITE_DATA_SOURCE", "mirror")

    def build(folder: str, splits: dict[str, list[dict[str, Any]]],
              sha256: dict[str, str] | None = None) -> Path:
        target = root / folder
        target.mkdir()
        manifest: dict[str, Any] = {"name": folder, "splits": {}}
        for split, rows in splits.items():
            file = f"{split}.jsonl.gz"
            digest = write_split(target / file, rows)
            manifest["splits"][split] = {"file": file, "rows": len(rows),
                                         "sha256": (sha256 or {}).get(split, digest)}
        (target / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
        return target

    return build


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """chdir into ``tmp_path`` so MLflow's default store (./mlflow.db, ./mlruns) is private;
    attack results are cached there too, so no test is served from another run's cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def training_runs(client: Any, experiment: str) -> list[Any]:
    """The training runs of ``experiment`` (MLflow ``Run``s), not their attack child runs."""
    from suite.core.records import PARENT_RUN_TAG

    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` IS NULL")


@pytest.fixture
def finished_smoke_run(workdir: Path):
    """``load(defense)`` -> (run, client): the one FINISHED smoke-profile training run of ``defense`` in
    the workdir's MLflow store, after checking what every smoke cell attacked with PWWS must log."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from suite.core.records import read_run

    def load(defense: str):
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        runs = training_runs(client, "suite-smoke")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        run = runs[0]
        record = read_run(client, run.info.run_id)  # with its attacks (child runs)
        metrics = record.metrics
        assert record.key[0] == defense
        assert 0.0 <= metrics["clean_accuracy"] <= 100.0 and 0.0 <= metrics["pwws.aua"] <= 100.0
        assert metrics["pwws.n"] == 20
        return run, client

    return load


@pytest.fixture
def one_torch_thread():
    """Run the test at one torch thread (the profiles' ``cpu_threads: 1``), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
