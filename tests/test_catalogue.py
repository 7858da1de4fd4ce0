"""The bad-input catalogue (issue 10): every bad input a new user may give is one line, no traceback.

Each CLI case runs ``suite.cli.main`` in-process in a private work folder that already holds a
tracking store with a finished run, an attack cache, leaderboard entries, a profile and a tiny
dataset mirror. It asserts the exit code, exactly one ``suite: error:`` line (one per failed job
for grid cases) that names what went wrong, where and how to fix it, no ``Traceback``, and that
every file and run present before is unchanged afterwards. Attack-cache lines are not errors: a
bad line is skipped with a warning naming the file and line, and its example is attacked again.

No case trains a model: profile cases use ``--dry-run``, data cases fail while the splits load,
store cases before the first job. Keep it growing: a new bad input found is a new case here.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import sqlite3
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import REPO_ROOT, make_rows, write_split
from suite.cli import main

BASE = """\
name: cat
version: 1
description: catalogue profile
seeds: [0]
protocol: {split_seed: 2024, attack_set_seed: 2024, attack_set_size: 10}
train: {epochs: 1, cpu_threads: 1}
datasets:
  trec: {train_limit: 40, validation_limit: 6, test_limit: 20}
backbones:
  cnn: {batch_size: 16, lr: 1.0e-3, optimizer: adam, schedule: constant}
defenses:
  finetune: {}
attacks: [pwws]
"""
CHECK_SET = """\
name: tiny
version: 1
description: catalogue check set
reference_tolerances: {clean: 1.0e-6}
items:
  - {name: one, profile: smoke, defenses: [finetune], datasets: [trec], backbones: [cnn], against: reference}
known_deviations: []
"""
DRY = ["run", "--profile", "{profile}", "--all", "--dry-run"]
RUN = ["run", "--profile", "{profile}", "--dataset", "trec", "--backbone", "cnn", "--defense", "finetune",
       "--no-attack"]
SMOKE_DRY = ["run", "--profile", "smoke", "--defense", "finetune", "--dataset", "trec", "--backbone", "cnn",
             "--dry-run"]
ENTRIES = ("cpu__trec__cnn__finetune.json", "smoke__sst2_sentence__cnn__pgd.json")


class Env:
    """A case's work folder: ``work`` (cwd: mlflow.db, cache/, entries/, cat.yaml) and ``mirror``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, template_db: Path) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.work, self.mirror = root / "work", root / "mirror"
        self.work.mkdir()
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("SUITE_CACHE_DIR", str(self.work / "cache"))
        monkeypatch.setenv("SUITE_DATA_DIR", str(self.mirror))
        monkeypatch.setenv("SUITE_DATA_SOURCE", "mirror")
        shutil.copy(template_db, self.work / "mlflow.db")
        cache = self.work / "cache" / "attacks" / ("c" * 16)
        cache.mkdir(parents=True)
        (cache / "0123abcd.jsonl").write_text(json.dumps(_record("test/0")) + "\n", encoding="utf-8")
        (self.work / "entries").mkdir()
        for name in ENTRIES:
            shutil.copy(REPO_ROOT / "leaderboard" / "entries" / name, self.work / "entries" / name)
        self.profile = self.work / "cat.yaml"
        self.profile.write_text(BASE, encoding="utf-8")
        self.split("trec", "train", make_rows(60, num_labels=6))
        self.split("trec", "test", make_rows(20, "test", 6))
        self.split("sst2_sentence", "train", make_rows(40))
        self.split("sst2_sentence", "validation", make_rows(10, "dev"))
        self.split("sst2_sentence", "test", make_rows(10, "test"))
        self.split("advglue", "sst2_dev", make_rows(10, "adv"))

    @property
    def names(self) -> dict[str, str]:
        return {"profile": str(self.profile), "work": str(self.work), "mirror": str(self.mirror)}

    def split(self, folder: str, split: str, rows: list[dict[str, Any]] | None = None,
              raw: bytes | None = None, **info: Any) -> Path:
        """Write ``<folder>/<split>.jsonl.gz`` (from rows, or gzip of ``raw`` bytes) and record its
        true sha256 in the folder's MANIFEST (``info`` overrides the MANIFEST's entry)."""
        target = self.mirror / folder
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{split}.jsonl.gz"
        if raw is None:
            digest = write_split(path, rows or [])
        else:
            path.write_bytes(raw)
            digest = hashlib.sha256(raw).hexdigest()
        manifest_path = target / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"name": folder, "splits": {}}
        manifest["splits"][split] = {"file": path.name, "rows": len(rows or []), "sha256": digest, **info}
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        return path

    def edit(self, old: str, new: str) -> None:
        text = self.profile.read_text(encoding="utf-8")
        assert old in text, f"the catalogue profile has no {old!r}"
        self.profile.write_text(text.replace(old, new, 1), encoding="utf-8")

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def snapshot(self) -> dict[str, Any]:
        """sha256 of every file (the store: its runs' rows), to compare before and after a case."""
        files = {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(self.root.rglob("*")) if p.is_file() and not p.name.startswith("mlflow.db")}
        return {"files": files, "runs": store_rows(self.work / "mlflow.db")}

    def still(self, before: dict[str, Any]) -> dict[str, Any]:
        """The same snapshot of the paths ``before`` had (new files are allowed)."""
        files = {}
        for name in before["files"]:
            path = self.root / name
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        return {"files": files, "runs": store_rows(self.work / "mlflow.db", before["runs"])}


def _record(example_id: str, **changes: Any) -> dict[str, Any]:
    return {"id": example_id, "label": 1, "result": "failed", "queries": 12, "seconds": 0.1,
            "original": ["a film"], "perturbed": "a movie", "original_prediction": 1,
            "perturbed_prediction": 1, **changes}


def store_rows(db: Path, runs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The runs (with their metrics, params and tags) of the sqlite store ``db``: all of them, or the
    ones in ``runs``; a run missing now maps to None."""
    if not db.is_file():
        return {k: None for k in runs or {}}
    with sqlite3.connect(db) as con:
        ids = list(runs) if runs is not None else [r[0] for r in con.execute("SELECT run_uuid FROM runs")]
        out: dict[str, Any] = {}
        for run_id in ids:
            row = con.execute("SELECT status, end_time, lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
            out[run_id] = None if row is None else {
                "run": row, **{t: sorted(con.execute(f"SELECT * FROM {t} WHERE run_uuid = ?", (run_id,)).fetchall())
                               for t in ("metrics", "params", "tags")}}
    return out


def finished_runs(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT run_uuid FROM runs WHERE status = 'FINISHED'")}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sqlite tracking store holding one finished run (of another experiment): built once."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("catalogue-existing", artifact_location=(folder / "artifacts").as_uri())
    run = client.create_run(exp, tags={"suite.kind": "existing"})
    client.log_param(run.info.run_id, "defense", "finetune")
    client.log_metric(run.info.run_id, "clean_accuracy", 88.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    return folder / "mlflow.db"


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    setup: Callable[[Env], None] | None = None
    says: tuple[str, ...] = ()  # in the error line: what, where, how ({profile}, {work}, {mirror} filled in)
    codes: tuple[int, ...] = (2,)
    errors: int = 1  # `suite: error:` lines (one per failed job in a grid)
    within_s: float | None = None  # fails fast
    no_new_finished_run: bool = False  # the bad input stops the job before it trains
    absent: tuple[str, ...] = ()  # paths (relative to the case's root) that must not exist afterwards
    stderr_has: tuple[str, ...] = ()


def P(id: str, old: str, new: str, *says: str, argv: list[str] = DRY, where: bool = True, **kw: Any) -> Case:
    """A profile case: BASE with ``old`` replaced by ``new``; the error names the profile file."""
    return Case(id, argv, lambda env: env.edit(old, new), (("{profile}",) if where else ()) + says, **kw)


def W(id: str, text: str | bytes, *says: str, **kw: Any) -> Case:
    """A profile case: cat.yaml replaced by ``text``."""
    return Case(id, DRY, lambda env: env.write("cat.yaml", text), ("{profile}",) + says, **kw)


def D(id: str, setup: Callable[[Env], None], *says: str, argv: list[str] = RUN, **kw: Any) -> Case:
    """A data case: the job fails while its splits load, before any training."""
    return Case(id, argv, setup, says, codes=(1, 2), no_new_finished_run=True, **kw)


OVERRIDE = "attacks: [pwws]\noverrides:\n  - {match: {dataset: trec}, train: {epochs: 2}}\n"
GRID = "attacks: [pwws]\ngrid:\n  - {datasets: [trec], backbones: [cnn]}\n"
PGD = "finetune: {}\n  pgd: {perturbation: {steps: 3}}"


def _gz_lines(*lines: bytes) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0)


def _row(i: int, **changes: Any) -> bytes:
    return json.dumps({"text": f"test number {i}", "label": i % 2, "idx": i, **changes}).encode()


def _bad_test(*lines: bytes, folder: str = "sst2_sentence") -> Callable[[Env], None]:
    return lambda env: env.split(folder, "test", raw=_gz_lines(*lines))


def _manifest(text: str, folder: str = "trec") -> Callable[[Env], None]:
    return lambda env: (env.mirror / folder / "MANIFEST.json").write_text(text, encoding="utf-8")


def _without_sha(env: Env) -> None:
    path = env.mirror / "trec" / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    del manifest["splits"]["test"]["sha256"]
    path.write_text(json.dumps(manifest))


def _check_set(old: str = "", new: str = "") -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        assert old in CHECK_SET
        env.write("tiny.yaml", CHECK_SET.replace(old, new, 1))
    return setup


def _bad_entry(env: Env) -> None:
    entry = json.loads((env.work / "entries" / ENTRIES[0]).read_text())
    entry["id"] = "../../PWNED"
    (env.work / "entries" / ENTRIES[0]).write_text(json.dumps(entry))


RUN_SST = [a if a != "trec" else "sst2_sentence" for a in RUN]
CHECK_TINY = ["check", "--set", "{work}/tiny.yaml", "--no-run"]
BUILD = ["leaderboard", "build", "--entries", "{work}/entries", "--out"]

CASES = [
    # --- profile values: types and ranges, caught when the profile loads (--dry-run) -----------------
    P("epochs-quoted", "epochs: 1,", 'epochs: "2",', "train.epochs", "must be an integer", "'2'"),
    P("epochs-float", "epochs: 1,", "epochs: 2.5,", "train.epochs", "must be an integer", "2.5"),
    P("epochs-bool", "epochs: 1,", "epochs: true,", "train.epochs", "must be an integer", "True"),
    P("epochs-zero", "epochs: 1,", "epochs: 0,", "epochs", ">= 1"),
    P("batch-size-float", "batch_size: 16", "batch_size: 12.5", "backbones.cnn.batch_size", "must be an integer"),
    P("seeds-scalar", "seeds: [0]", "seeds: 0", "seeds", "must be a list of integers", "got 0"),
    P("seeds-word", "seeds: [0]", "seeds: [zero]", "seeds", "must be a list of integers", "'zero'"),
    P("seeds-negative", "seeds: [0]", "seeds: [-1]", "seeds", ">= 0", "-1"),
    P("seeds-empty", "seeds: [0]", "seeds: []", "seeds", "at least one"),
    P("datasets-list", "datasets:\n  trec: {train_limit: 40, validation_limit: 6, test_limit: 20}",
      "datasets: [trec]", "datasets", "must be a mapping", "['trec']"),
    P("dataset-settings-list", "trec: {train_limit: 40, validation_limit: 6, test_limit: 20}", "trec: [flat]",
      "datasets.trec", "must be a mapping"),
    P("version-word", "version: 1", 'version: "one"', "version", "must be an integer", "'one'"),
    P("version-zero", "version: 1", "version: 0", "version", ">= 1"),
    P("name-number", "name: cat", "name: 5", "name", "must be a string"),
    P("unknown-dataset", "  trec: {", "  trek: {", "unknown dataset 'trek'", "did you mean 'trec'"),
    P("unknown-backbone", "cnn: {batch", "cnm: {batch", "unknown backbone 'cnm'", "did you mean 'cnn'"),
    P("unknown-defense", "finetune: {}", "finetun: {}", "unknown defense 'finetun'", "did you mean 'finetune'"),
    P("unknown-attack", "attacks: [pwws]", "attacks: [pwwz]", "unknown attack 'pwwz'", "did you mean 'pwws'",
      where=False),
    P("protocol-attack-set-size-negative", "attack_set_size: 10", "attack_set_size: -3",
      "protocol.attack_set_size", "must be >= 1", "-3"),
    P("protocol-attack-set-size-zero", "attack_set_size: 10", "attack_set_size: 0",
      "protocol.attack_set_size", "must be >= 1"),
    P("protocol-seed-negative", "split_seed: 2024", "split_seed: -1", "protocol.split_seed", ">= 0"),
    P("protocol-not-mapping", "protocol: {split_seed: 2024, attack_set_seed: 2024, attack_set_size: 10}",
      "protocol: 5", "protocol", "mapping"),
    P("dataset-attack-set-size-zero", "test_limit: 20}", "test_limit: 20, attack_set_size: 0}",
      "datasets.trec.attack_set_size", "must be >= 1", "omit"),
    P("dataset-attack-set-size-negative", "test_limit: 20}", "test_limit: 20, attack_set_size: -3}",
      "datasets.trec.attack_set_size", "must be >= 1", "-3"),
    P("dataset-attack-set-size-with-full", "test_limit: 20}", "test_limit: 20, attack_set: full, attack_set_size: 5}",
      "attack_set_size", "attack_set: protocol"),
    P("dataset-attack-set-unknown", "test_limit: 20}", "test_limit: 20, attack_set: all}", "attack_set", "'all'"),
    P("train-limit-zero", "train_limit: 40", "train_limit: 0", "datasets.trec.train_limit", ">= 1"),
    P("train-limit-quoted", "train_limit: 40", 'train_limit: "40"', "datasets.trec.train_limit", "must be an integer"),
    P("use-train-subset-word", "train_limit: 40", "use_train_subset: maybe, train_limit: 40",
      "datasets.trec.use_train_subset", "true or false"),
    P("scheme-unknown", "train_limit: 40", "scheme: flatt, train_limit: 40", "scheme", "'flatt'", "default, flat"),
    P("dataset-split-seed", "train_limit: 40", "split_seed: 3, train_limit: 40", "split_seed", "protocol.split_seed"),
    P("optimizer-unknown", "optimizer: adam", "optimizer: sgd", "optimizer", "'sgd'", "adamw, adam"),
    P("lr-word", "lr: 1.0e-3", "lr: fast", "lr", "must be a number", "'fast'"),
    P("lr-negative", "lr: 1.0e-3", "lr: -1.0e-3", "lr", "> 0"),
    P("warmup-ratio-above-one", "epochs: 1,", "epochs: 1, warmup_ratio: 1.5,", "train.warmup_ratio", "1.5"),
    P("max-length-zero", "epochs: 1,", "epochs: 1, max_length: 0,", "train.max_length", ">= 1"),
    P("cpu-threads-zero", "cpu_threads: 1", "cpu_threads: 0", "train.cpu_threads", ">= 1"),
    P("train-not-mapping", "train: {epochs: 1, cpu_threads: 1}", "train: [1]", "train", "mapping"),
    P("backbone-options-not-mapping", "cnn: {batch_size", "cnn: {options: 3, batch_size",
      "backbones.cnn.options", "mapping"),
    P("perturbation-steps-float", "finetune: {}", PGD.replace("steps: 3", "steps: 2.5"),
      "defenses.pgd.perturbation.steps", "must be an integer"),
    P("perturbation-not-mapping", "finetune: {}", PGD.replace("{steps: 3}", "3"),
      "defenses.pgd.perturbation", "expected a mapping"),
    P("defense-float-word", "finetune: {}", "finetune: {}\n  flooding: {flood_level: high}",
      "flood_level", "must be a number", "'high'"),
    P("defense-value-out-of-range", "finetune: {}", "finetune: {}\n  flooding: {flood_level: -0.1}",
      "flood_level", ">= 0"),
    P("overrides-mapping", "attacks: [pwws]", "attacks: [pwws]\noverrides: {match: {dataset: trec}}",
      "overrides", "must be a list"),
    P("override-match-unknown-key", "attacks: [pwws]", OVERRIDE.replace("dataset: trec", "datset: trec"),
      "overrides[0].match", "'datset'", "dataset, backbone, defense"),
    P("override-match-unknown-name", "attacks: [pwws]", OVERRIDE.replace("dataset: trec", "dataset: trek"),
      "overrides[0].match", "unknown dataset 'trek'", "did you mean 'trec'"),
    P("override-train-type", "attacks: [pwws]", OVERRIDE.replace("epochs: 2", 'epochs: "2"'),
      "overrides[0].train.epochs", "must be an integer"),
    P("attacks-not-a-list", "attacks: [pwws]", "attacks: pwws", "attacks", "must be a list of strings"),
    P("defense-settings-not-mapping", "finetune: {}", "finetune: 3", "defenses.finetune", "must be a mapping"),
    P("grid-not-list", "attacks: [pwws]", "attacks: [pwws]\ngrid: {datasets: [trec]}", "grid", "must be a list"),
    # --- profile keys and structure (handled before) ------------------------------------------------
    P("unknown-top-key", "seeds: [0]", "seed: [0]", "unknown setting 'seed'", "did you mean 'seeds'"),
    P("unknown-train-key", "epochs: 1,", "epoch: 1,", "unknown setting 'epoch'", "did you mean 'epochs'"),
    P("unknown-protocol-key", "attack_set_size: 10", "attack_set_sizes: 10", "did you mean 'attack_set_size'"),
    P("unknown-override-key", "attacks: [pwws]", OVERRIDE.replace("train:", "trian:"),
      "unknown setting 'trian'", "did you mean 'train'"),
    P("unknown-dataset-option", "train_limit: 40", "train_limits: 40", "did you mean 'train_limit'"),
    P("unknown-backbone-setting", "batch_size: 16", "batchsize: 16", "did you mean 'batch_size'"),
    P("unknown-defense-setting", "finetune: {}", "finetune: {}\n  flooding: {flood_levl: 0.2}",
      "defenses.flooding", "did you mean 'flood_level'"),
    P("unknown-perturbation-key", "finetune: {}", PGD.replace("steps: 3", "stpes: 3"),
      "defenses.pgd.perturbation", "did you mean 'steps'"),
    P("grid-unconfigured-backbone", "attacks: [pwws]", GRID.replace("backbones: [cnn]", "backbones: [lstn]"),
      "grid lists backbones lstn"),
    P("grid-unknown-key", "attacks: [pwws]", GRID.replace("datasets:", "dataset:"), "did you mean 'datasets'"),
    P("missing-name", "name: cat\n", "", "missing required setting", "name"),
    W("profile-not-mapping", "- a\n- b\n", "must be a YAML mapping"),
    W("profile-empty", "", "must be a YAML mapping"),
    W("profile-invalid-yaml", "name: [unclosed\n", "not valid YAML"),
    W("profile-not-utf8", BASE.replace("catalogue profile", "caf\xe9").encode("latin-1"), "UTF-8"),
    W("profile-extends-cycle", "extends: cat.yaml\nname: c\nversion: 1\n", "cycle"),
    W("profile-extends-unknown", "extends: smok\nname: c\nversion: 1\n", "extends", "did you mean 'smoke'"),
    W("profile-extends-without-name", "extends: smoke\nversion: 1\n", "needs its own name"),
    # --- command line ---------------------------------------------------------------------------------
    Case("query-budget-zero", SMOKE_DRY + ["--query-budget", "0"], says=("--query-budget", ">= 1", "'0'")),
    Case("query-budget-negative", SMOKE_DRY + ["--query-budget", "-5"], says=("--query-budget", ">= 1", "'-5'")),
    Case("query-budget-word", SMOKE_DRY + ["--query-budget", "many"], says=("--query-budget", "'many'")),
    Case("set-without-equals", SMOKE_DRY + ["--set", "defenses.finetune"], says=("--set", "KEY=VALUE")),
    Case("set-unknown-field", SMOKE_DRY + ["--set", "defenses.adv-aug.roundz=2"],
         says=("--set defenses.adv-aug.roundz=2", "did you mean 'rounds'")),
    Case("set-unknown-defense", SMOKE_DRY + ["--set", "defenses.adv-agu.rounds=1"],
         says=("unknown defense 'adv-agu'", "did you mean 'adv-aug'")),
    Case("set-bad-yaml", SMOKE_DRY + ["--set", "seeds=[0"], says=("--set", "not valid YAML")),
    Case("set-out-of-range", DRY + ["--set", "backbones.cnn.batch_size=0"],
         says=("--set backbones.cnn.batch_size=0", "must be >= 1")),
    Case("seed-negative", SMOKE_DRY + ["--seed", "-1"], says=("--seed", ">= 0", "'-1'")),
    Case("seed-word", SMOKE_DRY + ["--seed", "zero"], says=("--seed", "'zero'")),
    Case("pin-size-zero", ["pin-attack-sets", "--dataset", "trec", "--size", "0"], says=("--size", ">= 1")),
    Case("attack-and-no-attack", SMOKE_DRY + ["--attack", "pwws", "--no-attack"], says=("--no-attack", "--attack")),
    Case("unknown-defense-flag", SMOKE_DRY + ["--defense", "finetunee"], says=("did you mean 'finetune'",)),
    Case("unknown-dataset-flag", SMOKE_DRY + ["--dataset", "trek"], says=("did you mean 'trec'",)),
    Case("unknown-backbone-flag", SMOKE_DRY + ["--backbone", "cnm"], says=("did you mean 'cnn'",)),
    Case("unknown-attack-flag", SMOKE_DRY + ["--attack", "pwwz"], says=("did you mean 'pwws'",)),
    Case("unknown-profile-name", ["run", "--profile", "smok", "--all", "--dry-run"],
         says=("unknown profile 'smok'", "did you mean 'smoke'", "suite list profiles")),
    Case("profile-file-not-found", ["run", "--profile", "{work}/nope.yaml", "--all", "--dry-run"],
         says=("{work}/nope.yaml", "file not found")),
    Case("profile-relative-not-found", ["run", "--profile", "profiles/custom.yml", "--all", "--dry-run"],
         says=("profiles/custom.yml", "file not found")),
    Case("profile-is-directory", ["run", "--profile", "{work}", "--all", "--dry-run"],
         says=("{work}", "is a directory")),
    Case("run-nothing-selected", ["run", "--profile", "smoke"], says=("nothing selected", "--all")),
    Case("unknown-command", ["bogus"], says=("'bogus'", "--help")),
    Case("list-unknown-kind", ["list", "bogus"], says=("'bogus'", "suite list")),
    # --- suite check ----------------------------------------------------------------------------------
    Case("check-set-unknown", ["check", "--set", "bogus"], says=("'bogus'", "suite list check-sets")),
    Case("check-set-file-not-found", ["check", "--set", "{work}/nope.yaml"], says=("{work}/nope.yaml", "file not found")),
    Case("check-set-is-directory", ["check", "--set", "{work}"], says=("{work}", "is a directory")),
    Case("check-set-and-profile", ["check", "--set", "ci", "--profile", "smoke"], says=("--profile", "--set")),
    Case("check-against-unknown", ["check", "--against", "bogus"], says=("--against", "'bogus'")),
    Case("check-set-with-cell-flags", ["check", "--set", "ci", "--defense", "pgd"],
         says=("--defense", "--profile")),
    Case("check-profile-unknown", ["check", "--profile", "smok", "--no-run"], says=("did you mean 'smoke'",)),
    Case("check-profile-file-not-found", ["check", "--profile", "{work}/nope.yaml", "--no-run"],
         says=("{work}/nope.yaml", "file not found")),
    Case("check-set-invalid-yaml", CHECK_TINY, lambda env: env.write("tiny.yaml", "items: [\n"),
         says=("tiny.yaml", "not valid YAML")),
    Case("check-set-unknown-key", CHECK_TINY, _check_set("description:", "descripton:"),
         says=("tiny.yaml", "did you mean 'description'")),
    Case("check-set-bad-against", CHECK_TINY, _check_set("against: reference", "against: publish"),
         says=("tiny.yaml", "items[0]", "against")),
    Case("check-set-negative-tolerance", CHECK_TINY, _check_set("clean: 1.0e-6", "clean: -1"),
         says=("tiny.yaml", "non-negative")),
    Case("check-set-empty-items", CHECK_TINY, lambda env: env.write("tiny.yaml", CHECK_SET.split("items:")[0]
                                                                     + "items: []\n"),
         says=("tiny.yaml", "items must be a non-empty list")),
    Case("check-set-duplicate-items", CHECK_TINY,
         lambda env: env.write("tiny.yaml", CHECK_SET.replace("known_deviations", "  - {name: one, profile: smoke}\n"
                                                              "known_deviations")),
         says=("tiny.yaml", "unique")),
    Case("check-set-bad-deviation-cell", CHECK_TINY, _check_set(
        "known_deviations: []", "known_deviations:\n  - {cell: a/b, seeds: [0], paper: p, table: t, reason: r, "
        "reproduced: 1.0, difference: 0.5}"), says=("tiny.yaml", "known_deviations[0]", "cell")),
    Case("check-set-seeds-word", CHECK_TINY, _check_set("backbones: [cnn],", "backbones: [cnn], seeds: [zero],"),
         says=("tiny.yaml", "items[0].seeds", "must be a list of integers")),
    # --- leaderboard ----------------------------------------------------------------------------------
    Case("build-out-is-a-file", BUILD + ["{work}/cat.yaml"], says=("{work}/cat.yaml", "--out", "not a folder")),
    Case("build-out-under-a-file", BUILD + ["{work}/cat.yaml/site"], says=("{work}/cat.yaml", "--out")),
    Case("build-out-is-the-entries", BUILD + ["{work}/entries"], says=("--out", "entries folder")),
    Case("build-entries-missing", ["leaderboard", "build", "--entries", "{work}/nope", "--out", "{work}/site"],
         says=("{work}/nope", "collect")),
    Case("entry-id-outside-out", BUILD + ["{work}/site"], _bad_entry, says=("../../PWNED",), absent=("PWNED",
         "PWNED.html", "work/PWNED.html")),
    Case("show-unknown-dataset", ["leaderboard", "show", "--dataset", "trek", "--entries", "{work}/entries"],
         says=("'trek'", "trec")),
    Case("show-invalid-entry-json", ["leaderboard", "show", "--dataset", "trec", "--entries", "{work}/entries"],
         lambda env: env.write("entries/broken.json", "{"), says=("broken.json", "not valid JSON")),
    Case("show-format-unknown", ["leaderboard", "show", "--dataset", "trec", "--format", "html"],
         says=("--format", "'html'")),
    Case("collect-tolerances-not-found", ["leaderboard", "collect", "--tolerances", "{work}/nope.yaml",
                                          "--out", "{work}/entries"], says=("{work}/nope.yaml", "not found")),
    # --- data: the mirror and its files (the job fails while its splits load) -----------------------
    D("data-dir-missing", lambda env: env.monkeypatch.setenv("SUITE_DATA_DIR", str(env.work / "nowhere")),
      "SUITE_DATA_DIR", "{work}/nowhere", "does not exist"),
    D("data-dir-is-a-file", lambda env: env.monkeypatch.setenv("SUITE_DATA_DIR", str(env.profile)),
      "SUITE_DATA_DIR", "{profile}", "not a directory"),
    D("data-source-unknown", lambda env: env.monkeypatch.setenv("SUITE_DATA_SOURCE", "cloud"),
      "SUITE_DATA_SOURCE", "'cloud'"),
    D("mirror-folder-missing", lambda env: shutil.rmtree(env.mirror / "trec"), "no mirror folder 'trec'",
      "SUITE_DATA_DIR"),
    D("split-not-in-manifest", _manifest('{"name": "trec", "splits": {}}'), "split 'test' is not in the mirror"),
    D("sha256-mismatch", lambda env: env.split("trec", "test", make_rows(20, "test", 6), sha256="0" * 64),
      "sha256 mismatch", "test.jsonl.gz", "restore"),
    D("split-file-missing", lambda env: (env.mirror / "trec" / "test.jsonl.gz").unlink(),
      "test.jsonl.gz", "missing"),
    D("manifest-missing", lambda env: (env.mirror / "trec" / "MANIFEST.json").unlink(), "no MANIFEST.json"),
    D("manifest-not-json", _manifest("{not json"), "{mirror}/trec/MANIFEST.json", "not valid JSON", "line 1"),
    D("manifest-not-a-mapping", _manifest("[1, 2]"), "{mirror}/trec/MANIFEST.json", "splits"),
    D("manifest-split-without-sha256", _without_sha, "{mirror}/trec/MANIFEST.json", "test", "sha256"),
    D("truncated-gzip", lambda env: env.split("trec", "test", raw=_gz_lines(*[_row(i) for i in range(20)])[:-30]),
      "{mirror}/trec/test.jsonl.gz", "gzip", "sha256"),
    D("not-gzip", lambda env: env.split("trec", "test", raw=b"".join(_row(i) + b"\n" for i in range(5))),
      "{mirror}/trec/test.jsonl.gz", "gzip"),
    D("non-utf8-line", _bad_test(_row(0), _row(1), b'{"text": "caf\xe9", "label": 0}'),
      "{mirror}/sst2_sentence/test.jsonl.gz", "line 3", "UTF-8", argv=RUN_SST),
    D("row-not-json", _bad_test(_row(0), b"not json"), "{mirror}/sst2_sentence/test.jsonl.gz", "line 2", "JSON",
      argv=RUN_SST),
    D("row-not-an-object", _bad_test(_row(0), b"[1, 2]"), "{mirror}/sst2_sentence/test.jsonl.gz", "line 2",
      argv=RUN_SST),
    D("row-without-label", _bad_test(_row(0), b'{"text": "no label here"}'),
      "{mirror}/sst2_sentence/test.jsonl.gz", "line 2", "'label'", argv=RUN_SST),
    D("row-label-out-of-range", _bad_test(_row(0), _row(1), _row(2), _row(3, label=7)),
      "{mirror}/sst2_sentence/test.jsonl.gz", "line 4", "label 7", "2 classes", argv=RUN_SST),
    D("row-label-string", _bad_test(_row(0), _row(1, label="pos")), "{mirror}/sst2_sentence/test.jsonl.gz",
      "line 2", "'pos'", argv=RUN_SST),
    D("row-without-text", _bad_test(_row(0), b'{"label": 1}'), "{mirror}/sst2_sentence/test.jsonl.gz",
      "line 2", "'text'", argv=RUN_SST),
    D("row-text-null", _bad_test(_row(0), _row(1, text=None)), "{mirror}/sst2_sentence/test.jsonl.gz",
      "line 2", "'text'", argv=RUN_SST),
    D("carve-leaves-no-training-data", lambda env: env.edit("train_limit: 40", "scheme: flat, train_limit: 40"),
      "carving 452 validation rows from 60 training rows"),
    D("empty-test-split", lambda env: env.split("trec", "test", []), "trec", "test"),
    D("static-set-has-no-train-split", lambda env: None, "advglue_sst2",
      argv=[a if a != "trec" else "advglue_sst2" for a in RUN]),
    # --- the tracking store (fails fast, before the first job) ----------------------------------------
    Case("store-under-a-file", RUN + ["--tracking-uri", "sqlite:///{profile}/mlflow.db"], says=("{profile}",),
         within_s=15, no_new_finished_run=True),
    Case("store-http-refused", RUN + ["--tracking-uri", "http://127.0.0.1:9"], says=("127.0.0.1:9",),
         within_s=15, no_new_finished_run=True),
    # --- the grid goes on after a job's unexpected exception -------------------------------------------
    Case("grid-goes-on-after-an-exception",
         ["run", "--profile", "{profile}", "--all", "--no-attack"],
         lambda env: env.edit("cnn: {batch_size: 16, lr: 1.0e-3, optimizer: adam, schedule: constant}",
                              "cnn: {options: {bogus: 1}}\n  lstm: {options: {bogus: 2}}"),
         says=("finetune/trec/cnn/seed0", "bogus"), codes=(1, 2), errors=2,
         stderr_has=("[2/2] finetune/trec/lstm/seed0",), no_new_finished_run=True),
]


def _fill(text: str, env: Env) -> str:
    for key, value in env.names.items():
        text = text.replace("{" + key + "}", value)
    return text


def invoke(argv: list[str]) -> tuple[Any, str]:
    """``suite.cli.main(argv)``: (exit code, the traceback of an exception that escaped it)."""
    try:
        return main(argv), ""
    except SystemExit as exc:  # argparse
        return exc.code, ""
    except Exception as exc:  # noqa: BLE001 -- the user would see this traceback
        return "uncaught", "".join(traceback.format_exception(exc))


def test_catalogue_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in CASES] + list(CACHE_CASES)
    assert len(ids) == len(set(ids))
    assert len(ids) >= 80


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str], template_db: Path) -> None:
    env = Env(tmp_path, monkeypatch, template_db)
    if case.id == "pin-size-zero":  # never rewrite the committed pins, whatever the code does
        import suite.run.protocol as protocol

        monkeypatch.setattr(protocol, "ATTACK_SET_DIR", env.work / "attack_sets")
    if case.setup:
        case.setup(env)
    capsys.readouterr()
    before = env.snapshot()
    finished_before = finished_runs(env.work / "mlflow.db")
    start = time.monotonic()
    code, escaped = invoke([_fill(a, env) for a in case.argv])
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    text = captured.out + captured.err + escaped
    assert "Traceback" not in text, text
    lines = [line for line in captured.err.splitlines() if "suite: error:" in line]
    assert len(lines) == case.errors, captured.err
    assert all(line.startswith("suite: error: ") for line in lines), lines
    assert code in case.codes, (code, captured.err)
    for fragment in case.says:
        assert _fill(fragment, env) in lines[0], (fragment, lines[0])
    for fragment in case.stderr_has:
        assert fragment in captured.err, captured.err
    if case.within_s is not None:
        assert elapsed < case.within_s, f"took {elapsed:.0f} s"
    assert env.still(before) == before, "a file or run present before the case was changed"
    if case.no_new_finished_run:
        assert finished_runs(env.work / "mlflow.db") == finished_before
    for name in case.absent:
        assert not (tmp_path / name).exists() and not (tmp_path.parent / name).exists(), name


# --- attack-cache lines: skipped with a warning, the example attacked again --------------------------

GOOD_0 = json.dumps(_record("test/0")).encode()
GOOD_2 = json.dumps(_record("test/2")).encode()
CACHE_CASES = {  # the cache file's bytes, the line that is skipped
    "cache-line-number": (GOOD_0 + b"\n42\n" + GOOD_2 + b"\n", 2),
    "cache-line-null": (GOOD_0 + b"\nnull\n" + GOOD_2 + b"\n", 2),
    "cache-line-list": (GOOD_0 + b"\n[1, 2]\n" + GOOD_2 + b"\n", 2),
    "cache-line-without-id": (GOOD_0 + b"\n" + json.dumps(_record("x", id=None)).encode() + b"\n" + GOOD_2 + b"\n", 2),
    "cache-line-id-not-text": (GOOD_0 + b"\n" + json.dumps(_record("x", id=5)).encode() + b"\n" + GOOD_2 + b"\n", 2),
    "cache-line-without-result": (GOOD_0 + b'\n{"id": "test/1"}\n' + GOOD_2 + b"\n", 2),
    "cache-line-unknown-result": (GOOD_0 + b"\n" + json.dumps(_record("test/1", result="won")).encode() + b"\n"
                                  + GOOD_2 + b"\n", 2),
    "cache-invalid-utf8-mid-file": (GOOD_0 + b'\n{"id": "test/1", "perturbed": "caf\xe9"}\n' + GOOD_2 + b"\n", 2),
    "cache-not-json-mid-file": (GOOD_0 + b'\n{"id": "test/1", \n' + GOOD_2 + b"\n", 2),
    "cache-torn-in-utf8-char": (GOOD_0 + b"\n" + GOOD_2 + b'\n{"id": "test/1", "perturbed": "caf\xc3', 3),
    "cache-torn-last-line": (GOOD_0 + b"\n" + GOOD_2 + b"\n" + json.dumps(_record("test/1")).encode()[:-9], 3),
}


@pytest.mark.parametrize("name", list(CACHE_CASES))
def test_bad_cache_line_is_skipped_and_re_attacked(name: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from attacks.cache import AttackCache

    cache = AttackCache(tmp_path, "c" * 64, "attackhash")
    content, line = CACHE_CASES[name]
    cache.path.write_bytes(content)
    before = cache.path.read_bytes()
    with caplog.at_level(logging.INFO, logger="attacks.cache"):
        done = cache.load()
    assert set(done) == {"test/0", "test/2"}  # test/1 is attacked again
    assert cache.path.read_bytes() == before  # loading changes nothing
    notes = [r for r in caplog.records if r.name == "attacks.cache"]
    warnings = [r.getMessage() for r in notes if r.levelno >= logging.WARNING]
    if "torn" in name:  # a torn last line (a killed write) is expected: at most an INFO note
        assert not warnings and len(notes) <= 1, warnings
    else:
        assert len(warnings) == 1 and str(cache.path) in warnings[0] and f"line {line}" in warnings[0], warnings
    cache.append(_record("test/1"))  # the re-attacked example: a line of its own, read back
    assert set(cache.load()) == {"test/0", "test/1", "test/2"}
