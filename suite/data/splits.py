"""Protocol splits: deterministic train / validation / test for every dataset.

Rules (each recorded in ``ProtocolSplits.provenance``):
* a dataset with its own validation split uses it;
* otherwise validation is carved from train with a seeded permutation — one tenth of train
  (WETAR §4.1, scheme ``default``) or FLAT Table 1's dev size (scheme ``flat``: IMDB 5,000,
  AG News 6,000, TREC 452);
* GLUE tasks, whose test labels are hidden, use GLUE dev as the test split;
* a split missing from the mirror is an error unless the profile opts into the dataset's
  ``train_subset`` (AG News), which the run then records.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from suite.data import mirror
from suite.data.examples import Example
from suite.data.hub import load_hub_split
from suite.data.registry import DATASETS, DatasetSpec
from suite.core.errors import IntegrityError, MissingDataError, SuiteError
from suite.core.typed import at_least, require


SPLIT_SCHEMES = ("default", "flat")  # default: WETAR's one tenth; flat: FLAT Table 1 dev sizes


@dataclass(frozen=True)
class SplitOptions:
    """What a profile may choose about a dataset's splits."""

    scheme: str = "default"
    split_seed: int = 2024
    use_train_subset: bool = False
    train_limit: int | None = None  # first N rows of the (shuffled) train split
    validation_limit: int | None = None
    test_limit: int | None = None  # smoke only: Clean% then is not on the full test split
    attack_set: str = "protocol"  # protocol: protocol.attack_set_size examples; full: the whole test split
    # protocol only: attack the first N examples of the protocol's seeded draw instead (a subset of
    # the pinned set, e.g. where the full set does not fit a CPU session); recorded with the run
    attack_set_size: int | None = None

    def __post_init__(self) -> None:
        require(self.scheme in SPLIT_SCHEMES, "scheme",
                f"split scheme {self.scheme!r} is not one of {', '.join(SPLIT_SCHEMES)}")
        require(self.attack_set in ("protocol", "full"), "attack_set",
                f"{self.attack_set!r} is not one of protocol, full")
        at_least(self, 0, "split_seed")
        at_least(self, 1, "train_limit", "validation_limit", "test_limit", hint=" (or omit it for the whole split)")
        at_least(self, 1, "attack_set_size", hint=" (or omit it for the protocol's size, protocol.attack_set_size)")
        require(self.attack_set_size is None or self.attack_set == "protocol", "attack_set_size",
                "needs attack_set: protocol (attack_set: full attacks the whole test split); remove one of them")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProtocolSplits:
    dataset: str
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(DATASETS.get(self.dataset).label_names)


def data_source() -> str:
    source = os.environ.get("SUITE_DATA_SOURCE", "auto")
    if source not in ("auto", "mirror", "hub"):
        raise SuiteError(f"SUITE_DATA_SOURCE={source!r} is not one of auto, mirror, hub")
    return source


def _load_source_split(spec: DatasetSpec, split: str, provenance: dict[str, Any]) -> list[Example]:
    source = data_source()
    root = mirror.data_dir() if source != "hub" else None  # hub: a bad SUITE_DATA_DIR does not matter
    folder = root / spec.mirror_folder if root else None
    use_mirror = source == "mirror" or (source == "auto" and folder is not None and folder.is_dir())
    if use_mirror:
        if folder is None or not folder.is_dir():
            raise MissingDataError(
                f"{spec.name}: no mirror folder '{spec.mirror_folder}' under "
                f"{root or '(SUITE_DATA_DIR unset)'}; set SUITE_DATA_DIR to the dataset mirror"
            )
        files = mirror.mirror_splits(folder)
        if split not in files:
            extra = f" or opt into its '{spec.train_subset}' split (profile: use_train_subset: true)" if (
                split == "train" and spec.train_subset) else ""
            raise MissingDataError(
                f"{spec.name}: split '{split}' is not in the mirror at {folder} (it has: "
                f"{', '.join(sorted(files))}); add {split}.jsonl.gz with its sha256 to MANIFEST.json"
                f"{extra}, or load it from the hub with SUITE_DATA_SOURCE=hub"
            )
        path = files[split].path
        located = [(f"{path}: line {n}", row) for n, row in mirror.iter_jsonl_gz(files[split])]
        fix = mirror.REBUILD
        provenance.setdefault("sha256", {})[split] = files[split].sha256
        provenance["source"] = "mirror"
        provenance["mirror_dir"] = str(folder)
    else:
        located = [(f"{spec.hub.repo_id} split '{split}' row {i}", row)
                   for i, row in enumerate(load_hub_split(spec, split))]
        fix = "the hub copy does not match the dataset's spec (suite/data/registry.py): pin a revision that does"
        provenance["source"] = "hub"
        provenance["hub"] = {"repo_id": spec.hub.repo_id, "config": spec.hub.config,
                             "revision": spec.hub.revision or "unpinned"}
    return [_example(spec, f"{split}/{i}", row, at, fix) for i, (at, row) in enumerate(located)]


def _example(spec: DatasetSpec, example_id: str, row: dict[str, Any], at: str, fix: str) -> Example:
    """One row as an Example: its text fields present, its label one of the dataset's classes."""
    for name in spec.text_fields:
        if row.get(name) is None:
            raise IntegrityError(f"{at}: no '{name}' field (a {spec.name} row has {', '.join(spec.text_fields)} "
                                 f"and label); {fix}")
    label = row.get("label")
    n = spec.num_labels
    if isinstance(label, bool) or not isinstance(label, int):
        raise IntegrityError(f"{at}: " + (f"no 'label'" if label is None else f"label {label!r} is not a class index")
                             + f" ({spec.name}'s labels are 0-{n - 1}: {', '.join(spec.label_names)}); {fix}")
    if not 0 <= label < n:
        raise IntegrityError(f"{at}: label {label} is outside {spec.name}'s {n} classes "
                             f"(0-{n - 1}: {', '.join(spec.label_names)}); {fix}")
    return Example(id=example_id, texts=tuple(str(row[f]) for f in spec.text_fields), label=label)


def _limit(examples: list[Example], n: int | None, rng: np.random.Generator) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    order = rng.permutation(len(examples))[:n]
    return [examples[i] for i in sorted(order)]


def load_test_split(name: str) -> list[Example]:
    """The protocol test split of ``name`` alone (needs no training split)."""
    spec = DATASETS.get(name)
    return _load_source_split(spec, spec.test, {}) if spec.test else []


def load_protocol_splits(name: str, options: SplitOptions | None = None) -> ProtocolSplits:
    """Build the protocol's train / validation / test splits of dataset ``name``."""
    options = options or SplitOptions()
    spec = DATASETS.get(name)
    provenance: dict[str, Any] = {"dataset": name, "options": options.to_dict()}
    rng = np.random.default_rng(options.split_seed)

    test = _load_source_split(spec, spec.test, provenance) if spec.test else []
    if spec.train is None:  # static evaluation set
        return ProtocolSplits(name, [], [], _limit(test, options.test_limit, rng), provenance)

    train_split = spec.train
    if options.use_train_subset:
        if not spec.train_subset:
            raise SuiteError(f"{name}: use_train_subset is set but {name} has no train subset; remove it from the profile")
        train_split = spec.train_subset
        provenance["substitutions"] = [f"train = '{spec.train_subset}' (partial training split), not full train"]
    train = _load_source_split(spec, train_split, provenance)

    if spec.validation:
        validation = _load_source_split(spec, spec.validation, provenance)
        provenance["validation_rule"] = f"source split '{spec.validation}'"
    else:
        carve = spec.carve.get(options.scheme) or spec.carve.get("default")
        if carve is None:
            raise SuiteError(f"{name}: no validation split and no carve rule; add one to its DatasetSpec")
        n_val = carve.size(len(train))
        if not 0 < n_val < len(train):
            raise SuiteError(f"{name}: carving {n_val} validation rows from {len(train)} training rows leaves no "
                             "training or no validation data; check the mirror's train split")
        perm = np.random.default_rng(options.split_seed).permutation(len(train))
        val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
        validation = [train[i] for i in val_idx]
        train = [train[i] for i in train_idx]
        scheme = options.scheme if options.scheme in spec.carve else "default"
        provenance["validation_rule"] = f"carved from '{train_split}': {n_val} rows, scheme '{scheme}', seed {options.split_seed}"

    splits = ProtocolSplits(
        name,
        _limit(train, options.train_limit, rng),
        _limit(validation, options.validation_limit, rng),
        _limit(test, options.test_limit, rng),
        provenance,
    )
    provenance["sizes"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    provenance["test_is_full_split"] = options.test_limit is None or options.test_limit >= len(test)
    return splits
