"""Expanding a profile into jobs and running one job end to end."""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from defenses import DEFENSES, TrainingContext
from suite.run.attack_stage import attack_and_log, checkpoint_of
from suite.run.config import Job, Profile, TrainConfig, defense_provenance, from_mapping
from suite.data import DATASETS, SplitOptions, load_protocol_splits
from suite.data.splits import ProtocolSplits
from suite.core.errors import SuiteError
from suite.core.paths import attack_cache_root
from suite.models import BACKBONES, build_backbone
from suite.core.seeding import deterministic_mode, seed_everything
from suite.core.typed import merge_settings
from suite.run.protocol import environment_info, pin_attack_set, resolve_device
from suite.data.mirror import sha256_of
from suite.core.records import RunRecord, training_metrics
from suite.run.tracking import Tracker, dataset_inputs
from suite.models.batching import accuracy
from suite.run.training import train

log = logging.getLogger(__name__)


def _select(requested: Iterable[str] | None, available: Iterable[str], registry: Any, what: str) -> list[str]:
    available = list(available)
    if not requested:
        return available
    names = list(requested)
    for name in names:
        registry.get(name)  # unknown name -> one-line error with a suggestion
    return names


def check_trainable(dataset: str) -> None:
    """A one-line error for a dataset that has no train split (a static evaluation set such as AdvGLUE)."""
    spec = DATASETS.get(dataset)
    if spec.train is None:
        used_for = f" for {', '.join(spec.static_eval_for)}" if spec.static_eval_for else ""
        raise SuiteError(f"dataset {dataset} has no train split (it is a static evaluation set{used_for}); "
                         "train on a dataset with a train split and evaluate with its attack (e.g. --attack advglue)")


def check_splits(job: Job, splits: ProtocolSplits) -> None:
    """A one-line error, before training, for a protocol split without examples (the run would
    otherwise finish with Clean 0 or nan metrics)."""
    for name in ("train", "validation", "test"):
        if not getattr(splits, name):
            raise SuiteError(f"job {job.label}: the {name} split of {job.dataset} has no examples; check the "
                             f"dataset's mirror files and the profile's datasets.{job.dataset} limits "
                             f"({name}_limit must be at least 1)")


def expand_jobs(profile: Profile, *, defenses: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
                backbones: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[Job]:
    """The job grid datasets x backbones x defenses x seeds, each fully resolved.

    Names not in the profile are allowed (they get the profile's general settings), so a
    single cell can be run under any profile. A profile with a ``grid`` runs only the cells its
    blocks admit; a dimension named on the command line with a value the profile does not
    configure is not restricted by the grid.
    """
    chosen_defenses = _select(defenses, profile.defenses, DEFENSES, "defense")
    chosen_datasets = _select(datasets, profile.datasets, DATASETS, "dataset")
    chosen_backbones = _select(backbones, profile.backbones, BACKBONES, "backbone")
    jobs = []
    for dataset in chosen_datasets:
        check_trainable(dataset)
        ds_settings = dict(profile.datasets.get(dataset, {}))
        if "split_seed" in ds_settings:
            raise SuiteError(f"{profile.source}: datasets.{dataset}: split_seed is set once for all datasets, "
                             "under protocol.split_seed")
        split = from_mapping(SplitOptions, {**ds_settings, "split_seed": profile.protocol.split_seed},
                             f"{profile.source}: datasets.{dataset}")
        for backbone in chosen_backbones:
            bb_settings = dict(profile.backbones.get(backbone, {}))
            base_options = bb_settings.pop("options", {}) or {}
            for defense in chosen_defenses:
                bb_options = dict(base_options)
                train_settings = {**profile.train, **bb_settings}
                defense_settings = dict(profile.defenses.get(defense, {}))
                for override in profile.overrides:
                    if override.applies(dataset, backbone, defense):
                        train_settings.update(override.train)
                        bb_options = {**bb_options, **override.backbone_options}
                        defense_settings = merge_settings(defense_settings, override.defense)
                train_cfg = from_mapping(TrainConfig, train_settings, f"{profile.source}: train settings of {backbone}")
                defense_cls = DEFENSES.get(defense)
                defense_cfg = from_mapping(defense_cls.Config, defense_settings, f"{profile.source}: defenses.{defense}")
                wildcard = {"datasets": dataset not in profile.datasets, "backbones": backbone not in profile.backbones,
                            "defenses": defense not in profile.defenses}
                if profile.grid and not any(b.admits(dataset, backbone, defense, wildcard) for b in profile.grid):
                    continue
                for seed in (list(seeds) if seeds else profile.seeds):
                    jobs.append(Job(
                        profile=profile.name, profile_version=profile.version, dataset=dataset, split=split,
                        backbone=backbone, train=train_cfg, backbone_options=dict(bb_options), defense=defense,
                        defense_config=dataclasses.asdict(defense_cfg), seed=int(seed), protocol=profile.protocol,
                        attacks=profile.attacks, interpretation=profile.interpretation,
                        **defense_provenance(defense_cls),
                    ))
    if not jobs:
        raise SuiteError(f"{profile.source}: the selection matches no cell of the profile's grid; "
                         "see 'suite run --profile ... --all --dry-run' for its cells")
    return jobs


@dataclass
class JobResult:
    job: Job
    run_id: str
    config_hash: str
    skipped: bool
    metrics: dict[str, float] = field(default_factory=dict)
    attack_errors: list[str] = field(default_factory=list)


def data_digests(splits: ProtocolSplits) -> dict[str, str]:
    return {f"{splits.dataset}/{k}": v for k, v in splits.provenance.get("sha256", {}).items()}


def run_job(job: Job, tracker: Tracker, force: bool = False, attacks: Sequence[str] | None = None,
            query_budget: int | None = None, workers: int = 1, attack_engine: str = "fast") -> JobResult:
    """Train ``job``'s defense, measure Clean% on the test split, attack it, log to MLflow.

    An identical job (same config hash, same data digests) that already FINISHED is not
    trained again unless ``force``; its checkpoint is attacked with any attack not yet run
    (finished examples come from the per-example cache). ``attacks`` defaults to the profile's.
    ``workers`` processes attack each TextAttack-kind attack set and ``attack_engine`` runs it
    (``attacks.evaluation.run_attack``): neither changes a record, so neither is in the config hash.

    The job's lock (``Tracker.job_lock``, per config hash) is held from the check for a finished
    run to the last attack: a second process running the same job waits, then reuses the run.
    Runs of the job left RUNNING by a killed process are marked KILLED first (``Tracker.close_stale``).
    An empty split, or a dataset without a train split, is a one-line error before anything runs.
    """
    attacks = list(job.attacks if attacks is None else attacks)
    deterministic_mode()  # also when training is skipped: the attacks of a reloaded checkpoint run under it
    check_trainable(job.dataset)
    splits = load_protocol_splits(job.dataset, job.split)
    check_splits(job, splits)
    digests = data_digests(splits)
    config_hash = job.config_hash(digests)
    device = resolve_device(job.train.device)
    if device.type == "cpu" and job.train.cpu_threads:
        torch.set_num_threads(job.train.cpu_threads)
    attack_set = pin_attack_set(job.dataset, splits.test, job.attack_set_size or len(splits.test),
                                job.protocol.attack_set_seed)
    column_names = DATASETS.get(job.dataset).text_fields
    with tracker.job_lock(config_hash, job.label):  # an identical process waits here, then reuses the run
        tracker.close_stale(config_hash)  # RUNNING runs of the job: no live process holds its lock
        return _run_locked(job, tracker, force, attacks, query_budget, splits, digests, config_hash, device,
                           attack_set, column_names, workers, attack_engine)


def _run_locked(job: Job, tracker: Tracker, force: bool, attacks: list[str], query_budget: int | None,
                splits: ProtocolSplits, digests: dict[str, str], config_hash: str, device: torch.device,
                attack_set: Any, column_names: Sequence[str], workers: int = 1,
                attack_engine: str = "fast") -> JobResult:
    """``run_job`` with the job's lock held: reuse its finished run (attacking it with any attack
    not yet run), or train it, then attack it."""
    if not force:
        done = tracker.find_finished(config_hash)
        if done is not None:
            result = JobResult(job, done.run_id, config_hash, True, dict(done.metrics))
            if attacks:
                model, checkpoint_sha = checkpoint_of(tracker, done, device)
                logged, result.attack_errors = attack_and_log(
                    tracker, result.run_id, model, splits.test, attack_set, attacks, checkpoint_sha,
                    job.protocol.attack_set_seed, column_names, job.dataset, query_budget,
                    workers=workers, engine=attack_engine, interpretation=job.interpretation)
                result.metrics.update(logged)
            return result

    seed_everything(job.seed)
    model, backbone_facts = build_backbone(job.backbone, splits, job.seed, job.train.max_length, **job.backbone_options)
    defense_cls = DEFENSES.get(job.defense)
    defense = defense_cls(from_mapping(defense_cls.Config, job.defense_config, f"job {job.label}: defense"), model)
    model = defense.model.to(device)

    spec = BACKBONES.get(job.backbone)
    substitutions = list(spec.substitutions) + list(splits.provenance.get("substitutions", []))
    if not splits.provenance.get("test_is_full_split", True):
        substitutions.append(f"Clean% on {len(splits.test)} test examples, not the full test split")
    record = RunRecord.new(config=job.resolved(), config_hash=config_hash, data=splits.provenance, data_sha256=digests,
                           backbone_facts=backbone_facts, substitutions=substitutions,
                           environment=environment_info(device), attack_set=attack_set.to_dict(),
                           inputs=dataset_inputs(splits), train_attack=getattr(defense, "train_attack", None))
    with tracker.start_training(record, job.label) as run:
        context = TrainingContext(train=splits.train, validation=splits.validation, device=device, seed=job.seed,
                                  log_metric=lambda name, value, step: run.log_metric(name, value, step),
                                  log_artifact=lambda path, data: run.log_bytes(data, path),
                                  attack_cache_root=attack_cache_root() / "training", column_names=column_names)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.log_metrics(metrics, step=epoch + 1)
            log.info("%s epoch %d: %s", job.label, epoch + 1, {k: round(v, 4) for k, v in metrics.items()})

        result = train(defense, context, job.train, on_epoch)
        model = defense.model  # a phase may have replaced it; its inference extra modules are inside it
        clean = accuracy(model, splits.test, job.train.eval_batch_size, device, desc="clean accuracy")
        metrics = training_metrics(
            clean_accuracy=clean,
            best_epoch=result.best_epoch + 1,
            best_validation_accuracy=result.validation_accuracy[result.best_epoch],
            mean_epoch_time_s=sum(result.epoch_seconds) / len(result.epoch_seconds),
        )
        run.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="suite-ckpt-") as tmp:
            model.save(Path(tmp))
            checkpoint_sha = sha256_of(Path(tmp) / "model.safetensors")
            run.log_checkpoint(Path(tmp), checkpoint_sha)
    result = JobResult(job, run.run_id, config_hash, False, metrics)
    if attacks:  # after the training run is closed: a failing attack cannot undo it
        logged, result.attack_errors = attack_and_log(
            tracker, result.run_id, model, splits.test, attack_set, attacks, checkpoint_sha,
            job.protocol.attack_set_seed, column_names, job.dataset, query_budget,
            workers=workers, engine=attack_engine, interpretation=job.interpretation)
        result.metrics.update(logged)
    return result
