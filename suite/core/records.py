"""Typed run records: the one place where the suite's MLflow tag names, metric keys and artifact paths live.

A *training run* (``RunRecord``) is one (defense, dataset, backbone, seed) job: identity tags, the
resolved config as params, the artifacts ``job.json`` / ``environment.json`` / ``attack_set.json``
and ``checkpoint/``, the protocol splits as MLflow dataset inputs, and the final metrics. Each
attack of a trained model is a *child run* of it (``AttackRecord``; MLflow nested run, tag
``mlflow.parentRunId``), so a training run is never reopened once it ended.

``read_run`` / ``read_runs`` gather a training run's FINISHED child attack runs back into its
record, which then reads as the leaderboard expects: metrics ``<attack>.<key>`` (``pwws.aua``),
tags ``attack.<attack>.hash|variant|substitutions`` and summaries ``attacks/<attack>.json``. Runs
written before attacks became child runs (all of it on the training run) read the same way.

MLflow is imported inside the functions that need it (this module is the bottom layer).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from suite.core.errors import SuiteError

# --- experiments and runs ----------------------------------------------------------------------------------
# MLflow 3 opens an experiment on the view its kind names; without the tag it may start on the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_TAG = "mlflow.parentRunId"
KIND = "suite.kind"  # what a run is: KIND_TRAINING or KIND_ATTACK
KIND_TRAINING, KIND_ATTACK = "training", "attack"

# --- training-run tags -------------------------------------------------------------------------------------
CONFIG_HASH = "config_hash"
DEFENSE, DATASET, BACKBONE = "suite.defense", "suite.dataset", "suite.backbone"
SEED, PROFILE = "suite.seed", "suite.profile"
IDENTITY = (DEFENSE, DATASET, BACKBONE, PROFILE)  # the tags every suite training run carries
ATTACK_SET_SHA256 = "suite.attack_set_sha256"
TRAIN_ATTACK = "suite.train_attack"  # the defense's declared training attack, or NONE
DEFENSE_VERSION = "suite.defense_version"
DEFENSE_PACKAGE = "suite.defense_package"  # plugin defenses only: "<distribution>==<version>"
GIT_COMMIT, DEVICE, SUBSTITUTIONS, CHECKPOINT_SHA256 = "git_commit", "device", "substitutions", "checkpoint_sha256"
NONE = "none"  # tag value of an empty list / no training attack

# --- training-run metrics (the loop's per-epoch metrics are logged by suite.run.training) -----------------
CLEAN_ACCURACY = "clean_accuracy"
BEST_EPOCH = "best_epoch"
BEST_VALIDATION_ACCURACY = "best_validation_accuracy"
MEAN_EPOCH_TIME = "mean_epoch_time_s"

# --- training-run artifacts --------------------------------------------------------------------------------
JOB_ARTIFACT, ENVIRONMENT_ARTIFACT, ATTACK_SET_ARTIFACT = "job.json", "environment.json", "attack_set.json"
CHECKPOINT_ARTIFACT = "checkpoint"  # folder: model.safetensors + model.json

# --- attack (child) runs: tags, metric keys, artifacts ------------------------------------------------------
ATTACK, ATTACK_HASH, ATTACK_VARIANT, ATTACK_SUBSTITUTIONS = (
    "suite.attack", "suite.attack_hash", "suite.attack_variant", "suite.attack_substitutions")
# copied from the training run so that a search on them finds its attacks too
INHERITED = (CONFIG_HASH, DEFENSE, DATASET, BACKBONE, SEED, PROFILE, CHECKPOINT_SHA256)
# TextAttack recipes: accuracy under attack, attack success rate, mean queries, Clean% of the attacked
# set, attacked examples, attack time (attacks.metrics); k-PGD and AdvGLUE log their own keys
AUA, SUC, QUERIES, CLEAN_ATTACKED_SET, N, ATTACK_SECONDS = (
    "aua", "suc", "queries", "clean_attacked_set", "n", "attack_seconds")
# Interpretation consistency of the attacked pairs (FLAT §5.2; attacks.interpretation): IG keys as
# they are, LIME's with INTERPRETATION_SUFFIX["lime"]; top-k for k = 1..10 as ``topk_intersection_k<k>``
KENDALL_TAU, TOPK_INTERSECTION = "kendall_tau", "topk_intersection"
INTERPRETATION_SUFFIX = {"ig": "", "lime": "_lime"}


def interpretation_metric(key: str, method: str) -> str:
    """The attack-run metric key of consistency value ``key`` measured with ``method`` (ig / lime),
    e.g. ``kendall_tau`` (IG), ``kendall_tau_lime``, ``topk_intersection_k3_lime``, ``pairs_lime``."""
    return f"{key}{INTERPRETATION_SUFFIX[method]}"


def attack_summary_path(attack: str) -> str:
    return f"attacks/{attack}.json"


def attack_examples_path(attack: str) -> str:
    return f"attacks/{attack}.jsonl"


_ATTACK_TAG_PREFIX = "attack."


def _attack_tag(attack: str, what: str) -> str:
    """The training record's view of an attack's tags: ``attack.<attack>.<what>``."""
    return f"{_ATTACK_TAG_PREFIX}{attack}.{what}"


def _attack_metric(attack: str, key: str) -> str:
    return f"{attack}.{key}"


def _joined(items: Iterable[str]) -> str:
    return "; ".join(items) or NONE


def _split(tag: str | None) -> tuple[str, ...]:
    return () if tag in (None, "", NONE) else tuple(s for s in str(tag).split("; ") if s)


# --- params --------------------------------------------------------------------------------------------------

def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested mappings as dotted MLflow params (``train.epochs``); lists as JSON."""
    out: dict[str, str] = {}
    _flatten("", config, out)
    return out


# --- what a run logs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInput:
    """One protocol split as an MLflow dataset input (``mlflow.log_inputs``): name ``<dataset>/<split>``."""

    dataset: str
    split: str  # train | validation | test: the input's context
    digest: str | None  # sha256 of the source file (mirror); None: MLflow derives one from name and source
    source: str  # file:// URI of the mirror file, or the hub URL
    rows: int
    source_split: str = ""
    rule: str | None = None  # how the split was made from the source (e.g. validation carved from train)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}"

    def to_mlflow(self) -> tuple[Any, str, dict[str, str]]:
        """(``MetaDataset``, context, input tags) for ``mlflow.log_inputs``."""
        from mlflow.data.dataset_source_registry import get_dataset_source_from_json
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        if self.source.startswith(("http://", "https://")):
            source = HTTPDatasetSource(self.source)
        else:  # a local file (the mirror): MLflow's "local" source type
            source = get_dataset_source_from_json(json.dumps({"uri": self.source}), source_type="local")
        # the store keeps at most 36 characters of a dataset digest
        dataset = MetaDataset(source, name=self.name, digest=self.digest[:32] if self.digest else None)
        tags = {"rows": str(self.rows), "source_split": self.source_split}
        if self.rule:
            tags["rule"] = self.rule
        return dataset, self.split, tags


@dataclass(frozen=True)
class MlflowPayload:
    """Everything one run logs besides what its code logs as it goes (per-epoch metrics, the checkpoint)."""

    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    json_artifacts: dict[str, Any] = field(default_factory=dict)  # artifact file -> object (mlflow.log_dict)
    text_artifacts: dict[str, str] = field(default_factory=dict)  # artifact file -> text (mlflow.log_text)
    inputs: tuple[DatasetInput, ...] = ()


def training_metrics(*, clean_accuracy: float, best_epoch: int, best_validation_accuracy: float,
                     mean_epoch_time_s: float) -> dict[str, float]:
    """The run-level metrics a training run logs when it ends."""
    return {CLEAN_ACCURACY: clean_accuracy, BEST_EPOCH: best_epoch, BEST_VALIDATION_ACCURACY: best_validation_accuracy,
            MEAN_EPOCH_TIME: mean_epoch_time_s}


def checkpoint_tags(sha256: str) -> dict[str, str]:
    return {CHECKPOINT_SHA256: sha256}


# --- records -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackRecord:
    """One attack of one trained model: a child run of the training run."""

    attack: str
    attack_hash: str
    variant: str = "stock"
    substitutions: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)  # unprefixed: aua, suc, ... (k-PGD: accuracy, ...)
    summary: dict[str, Any] | None = None  # artifact attacks/<attack>.json: settings and metrics
    examples: tuple[dict[str, Any], ...] = ()  # artifact attacks/<attack>.jsonl (written, not read back)
    run_id: str = ""
    parent_run_id: str = ""
    start_time: int = 0

    @staticmethod
    def textattack_metrics(*, aua: float, suc: float, queries: float, clean_attacked_set: float, n: float,
                           attack_seconds: float) -> dict[str, float]:
        return {AUA: aua, SUC: suc, QUERIES: queries, CLEAN_ATTACKED_SET: clean_attacked_set, N: n,
                ATTACK_SECONDS: attack_seconds}

    def prefixed_metrics(self) -> dict[str, float]:
        """The metrics as the training record carries them: ``<attack>.<key>``."""
        return {_attack_metric(self.attack, k): float(v) for k, v in self.metrics.items()}

    def training_tags(self) -> dict[str, str]:
        return {_attack_tag(self.attack, "variant"): self.variant, _attack_tag(self.attack, "hash"): self.attack_hash,
                _attack_tag(self.attack, "substitutions"): _joined(self.substitutions)}

    def to_mlflow(self, parent: "RunRecord") -> MlflowPayload:
        tags = {k: parent.tags[k] for k in INHERITED if k in parent.tags}
        tags.update({KIND: KIND_ATTACK, ATTACK: self.attack, ATTACK_HASH: self.attack_hash,
                     ATTACK_VARIANT: self.variant, ATTACK_SUBSTITUTIONS: _joined(self.substitutions)})
        texts = {}
        if self.examples:
            texts[attack_examples_path(self.attack)] = "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in self.examples)
        return MlflowPayload(tags=tags, metrics={k: float(v) for k, v in self.metrics.items()},
                             json_artifacts={attack_summary_path(self.attack): self.summary or {}},
                             text_artifacts=texts)

    @classmethod
    def from_mlflow(cls, client: Any, run: Any, *, artifacts: bool = True) -> "AttackRecord":
        tags = run.data.tags
        name = tags[ATTACK]
        return cls(attack=name, attack_hash=tags.get(ATTACK_HASH, ""), variant=tags.get(ATTACK_VARIANT, "stock"),
                   substitutions=_split(tags.get(ATTACK_SUBSTITUTIONS)), metrics=dict(run.data.metrics),
                   summary=_artifact_json(client, run.info.run_id, attack_summary_path(name)) if artifacts else None,
                   run_id=run.info.run_id, parent_run_id=tags.get(PARENT_RUN_TAG, ""),
                   start_time=int(run.info.start_time or 0))


@dataclass(frozen=True)
class RunRecord:
    """One FINISHED training run as the leaderboard and ``suite check`` read it, and as the runner writes it.

    ``tags`` / ``metrics`` / ``attack_summaries`` include the run's attacks (gathered from its child
    runs): metrics ``<attack>.<key>``, tags ``attack.<attack>.{hash,variant,substitutions}``.
    """

    run_id: str
    experiment: str
    start_time: int
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)
    job: dict[str, Any] | None = None  # artifact job.json
    environment: dict[str, Any] | None = None  # artifact environment.json
    attack_summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifacts attacks/<name>.json
    experiment_id: str = ""
    attack_set: dict[str, Any] | None = None  # artifact attack_set.json (written; not read back)
    inputs: tuple[DatasetInput, ...] = ()  # the protocol splits (written as dataset inputs; not read back)
    attack_runs: dict[str, str] = field(default_factory=dict)  # attack -> id of the child run it was read from

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRecord":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def new(cls, *, config: Mapping[str, Any], config_hash: str, data: Mapping[str, Any],
            data_sha256: Mapping[str, str], backbone_facts: Mapping[str, Any], substitutions: Sequence[str],
            environment: Mapping[str, Any], attack_set: Mapping[str, Any], inputs: Sequence[DatasetInput] = (),
            train_attack: str | None = None) -> "RunRecord":
        """The record of a training run about to start, from the job's resolved ``config``
        (``suite.run.config.Job.resolved``) and what the runner measured about its data and machine."""
        tags = {CONFIG_HASH: config_hash, KIND: KIND_TRAINING, DEFENSE: str(config["defense"]),
                DATASET: str(config["dataset"]), BACKBONE: str(config["backbone"]), SEED: str(config["seed"]),
                PROFILE: str(config["profile"]), ATTACK_SET_SHA256: str(attack_set["sha256"]),
                TRAIN_ATTACK: str(train_attack) if train_attack not in (None, "") else NONE,
                DEFENSE_VERSION: str(config.get("defense_version", 1)),
                GIT_COMMIT: str(environment.get("git_commit", "unknown")),
                DEVICE: str(environment.get("device", "unknown")),
                SUBSTITUTIONS: _joined(substitutions)}
        if config.get("defense_package"):
            tags[DEFENSE_PACKAGE] = str(config["defense_package"])
        params = flatten_params({**config, "data.source": data.get("source"),
                                 "data.validation_rule": data.get("validation_rule"), "data.sizes": data.get("sizes"),
                                 "backbone_facts": dict(backbone_facts), "attack_set.size": attack_set["size"],
                                 "attack_set.sha256": attack_set["sha256"]})
        job = {"config": dict(config), "config_hash": config_hash, "data": dict(data), "data_sha256": dict(data_sha256),
               "backbone": dict(backbone_facts), "substitutions": list(substitutions)}
        return cls(run_id="", experiment="", start_time=0, tags=tags, metrics={}, params=params, job=job,
                   environment=dict(environment), attack_set=dict(attack_set), inputs=tuple(inputs))

    def to_mlflow(self) -> MlflowPayload:
        artifacts = {path: obj for path, obj in ((JOB_ARTIFACT, self.job), (ENVIRONMENT_ARTIFACT, self.environment),
                                                 (ATTACK_SET_ARTIFACT, self.attack_set)) if obj is not None}
        return MlflowPayload(tags=dict(self.tags), params=dict(self.params), metrics=dict(self.metrics),
                             json_artifacts=artifacts, inputs=self.inputs)

    @classmethod
    def from_mlflow(cls, client: Any, run: Any, children: Iterable[Any] = (), *, attacks: Sequence[str] | None = None,
                    artifacts: bool = True, experiment: str | None = None) -> "RunRecord":
        """The record of training ``run`` (an MLflow ``Run``) with its FINISHED child attack ``children``.

        ``attacks``: keep only these attacks (and the run-level metrics). Of several children of
        one attack the most recent counts.
        """
        rid = run.info.run_id
        tags, metrics = dict(run.data.tags), dict(run.data.metrics)
        legacy = _tagged_attacks(tags)  # attacks logged on the training run itself (older stores)
        summaries = {}
        if artifacts:
            summaries = {a: s for a in legacy if (attacks is None or a in attacks)
                         and (s := _artifact_json(client, rid, attack_summary_path(a))) is not None}
        latest: dict[str, Any] = {}
        for child in sorted(children, key=lambda c: (int(c.info.start_time or 0), c.info.run_id)):
            name = child.data.tags.get(ATTACK)
            if name and (attacks is None or name in attacks) and child.info.status == "FINISHED":
                latest[name] = child
        if attacks is not None:
            dropped = [a for a in legacy if a not in attacks]
            tag_prefixes = tuple(_attack_tag(a, "") for a in dropped)
            metric_prefixes = tuple(_attack_metric(a, "") for a in dropped)
            tags = {k: v for k, v in tags.items() if not k.startswith(tag_prefixes)}
            metrics = {k: v for k, v in metrics.items() if not k.startswith(metric_prefixes)}
        attack_runs = {}
        for name, child in latest.items():
            attack_runs[name] = child.info.run_id
            record = AttackRecord.from_mlflow(client, child, artifacts=artifacts)
            metrics = {k: v for k, v in metrics.items() if not k.startswith(_attack_metric(name, ""))}
            tags.update(record.training_tags())
            metrics.update(record.prefixed_metrics())
            if record.summary is not None:
                summaries[name] = record.summary
            else:
                summaries.pop(name, None)
        exp_id = run.info.experiment_id
        if experiment is None:
            try:
                experiment = client.get_experiment(exp_id).name
            except Exception:  # a run whose experiment cannot be read still has its data
                experiment = exp_id
        return cls(run_id=rid, experiment=experiment, start_time=int(run.info.start_time or 0), tags=tags,
                   metrics=metrics, params=dict(run.data.params),
                   job=_artifact_json(client, rid, JOB_ARTIFACT) if artifacts else None,
                   environment=_artifact_json(client, rid, ENVIRONMENT_ARTIFACT) if artifacts else None,
                   attack_summaries=summaries, experiment_id=exp_id, attack_runs=attack_runs)

    # --- what the readers ask ------------------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str, str, str]:
        """(defense, dataset, backbone, profile): the leaderboard entry the run belongs to."""
        t = self.tags
        return t[DEFENSE], t[DATASET], t[BACKBONE], t[PROFILE]

    @property
    def seed(self) -> int:
        return int(self.tags.get(SEED, self.params.get("seed", -1)))

    @property
    def label(self) -> str:
        return f"{self.tags.get(DEFENSE)}/{self.tags.get(DATASET)}/{self.tags.get(BACKBONE)}/seed{self.seed}"

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config (job.json), else the flattened params when the artifact is missing."""
        if self.job and "config" in self.job:
            return dict(self.job["config"])
        return dict(self.params)

    @property
    def config_hash(self) -> str | None:
        return self.tags.get(CONFIG_HASH)

    @property
    def git_commit(self) -> str | None:
        return self.tags.get(GIT_COMMIT)

    @property
    def device(self) -> str | None:
        return self.tags.get(DEVICE)

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.tags.get(CHECKPOINT_SHA256)

    @property
    def substitutions(self) -> tuple[str, ...] | None:
        """The substitutions tag as a list; None when the run has no such tag."""
        return _split(self.tags[SUBSTITUTIONS]) if SUBSTITUTIONS in self.tags else None

    @property
    def records_train_attack(self) -> bool:
        """Whether the run recorded its defense's training attack (runs of older suites did not)."""
        return TRAIN_ATTACK in self.tags

    @property
    def train_attack(self) -> str | None:
        value = self.tags.get(TRAIN_ATTACK)
        return None if value in (None, "", NONE) else value

    @property
    def clean_accuracy(self) -> float | None:
        return self.metrics.get(CLEAN_ACCURACY)

    def run_metrics(self) -> dict[str, float]:
        """The run-level metrics (not those of an attack)."""
        return {k: self.metrics[k] for k in (CLEAN_ACCURACY, BEST_EPOCH, BEST_VALIDATION_ACCURACY, MEAN_EPOCH_TIME)
                if k in self.metrics}

    def attacks(self) -> list[str]:
        return _tagged_attacks(self.tags)

    def attack_hash(self, attack: str) -> str | None:
        return self.tags.get(_attack_tag(attack, "hash"))

    def attack_variant(self, attack: str, default: str = "stock") -> str:
        return self.tags.get(_attack_tag(attack, "variant"), default)

    def attack_substitutions(self, attack: str) -> tuple[str, ...]:
        return _split(self.tags.get(_attack_tag(attack, "substitutions")))

    def attack_metrics(self, attack: str) -> dict[str, float]:
        """The metrics of ``attack`` by key (``aua``, ``suc``, ...)."""
        prefix = _attack_metric(attack, "")
        return {k[len(prefix):]: v for k, v in self.metrics.items() if k.startswith(prefix)}

    def with_attack(self, attack: AttackRecord) -> "RunRecord":
        """This record with ``attack`` gathered in (as the reader does)."""
        prefix = _attack_metric(attack.attack, "")
        metrics = {k: v for k, v in self.metrics.items() if not k.startswith(prefix)}
        summaries = dict(self.attack_summaries)
        if attack.summary is not None:
            summaries[attack.attack] = attack.summary
        runs = {**self.attack_runs, attack.attack: attack.run_id} if attack.run_id else dict(self.attack_runs)
        return replace(self, tags={**self.tags, **attack.training_tags()},
                       metrics={**metrics, **attack.prefixed_metrics()}, attack_summaries=summaries, attack_runs=runs)


def _tagged_attacks(tags: Mapping[str, str]) -> list[str]:
    """The attacks named by ``attack.<attack>.hash`` tags."""
    start, end = _ATTACK_TAG_PREFIX, ".hash"
    return sorted(k[len(start):-len(end)] for k in tags if k.startswith(start) and k.endswith(end))


def _artifact_json(client: Any, run_id: str, path: str) -> dict[str, Any] | None:
    try:
        with tempfile.TemporaryDirectory(prefix="suite-record-") as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
    except Exception:  # a run whose artifact store is gone still has its tags / metrics / params
        return None


# --- searching and reading ---------------------------------------------------------------------------------

def is_training_run(tags: Mapping[str, str]) -> bool:
    return set(IDENTITY) <= set(tags) and PARENT_RUN_TAG not in tags and tags.get(KIND, KIND_TRAINING) == KIND_TRAINING


def finished_training_filter(config_hash: str | None = None) -> str:
    """An MLflow search filter: FINISHED training runs (not their attack children), of ``config_hash``."""
    where = f"attributes.status = 'FINISHED' and tags.`{PARENT_RUN_TAG}` IS NULL"
    return where + (f" and tags.{CONFIG_HASH} = '{config_hash}'" if config_hash else "")


def _children_filter(parent_run_id: str) -> str:
    return f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and tags.`{KIND}` = '{KIND_ATTACK}'"


def search_all(client: Any, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
    """Every run of ``experiment_ids`` matching ``filter_string`` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def open_client(tracking_uri: str | None) -> Any:
    """A client of an existing store, for reading (a missing local store or a dead server: one line, fast)."""
    from mlflow.tracking import MlflowClient

    from suite.core.store import check_readable, quick_connect

    check_readable(tracking_uri or "")  # reading never creates a store
    try:
        with quick_connect(tracking_uri or ""):
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
    except Exception as exc:
        raise SuiteError(f"cannot open MLflow tracking store {tracking_uri} ({exc.__class__.__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]}); check --tracking-uri") from None
    return client


def read_run(client: Any, run_id: str, attacks: Sequence[str] | None = None, *, artifacts: bool = True) -> RunRecord:
    """The record of training run ``run_id`` with its finished attacks (only ``attacks`` if given)."""
    run = client.get_run(run_id)
    children = search_all(client, [run.info.experiment_id], _children_filter(run_id))
    return RunRecord.from_mlflow(client, run, children, attacks=attacks, artifacts=artifacts)


def read_runs(tracking_uri: str) -> list[RunRecord]:
    """Every FINISHED suite training run, with its attacks, in every active experiment of the store."""
    client = open_client(tracking_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    runs = search_all(client, list(experiments), "attributes.status = 'FINISHED'")
    children: dict[str, list[Any]] = {}
    for run in runs:
        tags = run.data.tags
        if tags.get(KIND) == KIND_ATTACK and PARENT_RUN_TAG in tags:
            children.setdefault(tags[PARENT_RUN_TAG], []).append(run)
    return [RunRecord.from_mlflow(client, run, children.get(run.info.run_id, ()),
                                  experiment=experiments.get(run.info.experiment_id, run.info.experiment_id))
            for run in runs if is_training_run(run.data.tags)]
