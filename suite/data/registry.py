"""The dataset registry: what each dataset is, online and in the mirror.

Online loading uses the Hugging Face hub (``datasets.load_dataset``) with the field mapping
below; offline loading reads the mirror (``suite.data.mirror``). ``revision`` is the hub
commit to load; ``None`` means no commit has been pinned yet, which the run records as
``hub_revision=unpinned`` (the mirror path is always pinned by sha256).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from suite.core.registry import Registry


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    config: str | None = None
    revision: str | None = None
    splits: dict[str, str] = field(default_factory=dict)  # source split -> hub split
    text_fields: tuple[str, ...] = ("text",)
    label_field: str = "label"


@dataclass(frozen=True)
class Carve:
    """Hold out validation rows from train: ``count`` rows, or ``fraction`` of train."""

    fraction: float | None = None
    count: int | None = None

    def size(self, n_train: int) -> int:
        if self.count is not None:
            return self.count
        assert self.fraction is not None
        return int(round(n_train * self.fraction))


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the suite.

    ``train`` / ``validation`` / ``test`` name the *source* split each protocol split comes
    from (``None``: carved from train, see ``carve``). ``carve`` maps a split scheme name
    (``default`` = WETAR's one tenth of train, ``flat`` = FLAT Table 1's dev sizes) to the
    hold-out rule. ``train_subset`` names a partial training split a profile may opt into.
    """

    name: str
    description: str
    mirror_folder: str
    label_names: tuple[str, ...]
    hub: HubSource
    train: str | None = "train"
    validation: str | None = None
    test: str | None = "test"
    carve: dict[str, Carve] = field(default_factory=lambda: {"default": Carve(fraction=0.1)})
    text_fields: tuple[str, ...] = ("text",)
    train_subset: str | None = None
    static_eval_for: tuple[str, ...] = ()  # adversarial test sets: the datasets whose models they evaluate
    notes: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _add(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


ONE_TENTH = {"default": Carve(fraction=0.1)}

_add(DatasetSpec(
    name="sst2",
    description="GLUE SST-2 (67,349 train phrases); GLUE dev is the test split (test labels hidden)",
    mirror_folder="sst2", label_names=("negative", "positive"),
    hub=HubSource("nyu-mll/glue", "sst2", splits={"train": "train", "validation": "validation"},
                  text_fields=("sentence",)),
    train="train", validation=None, test="validation", carve=ONE_TENTH,
    notes="validation: one tenth of GLUE train held out (WETAR §4.1); test: GLUE dev",
))
_add(DatasetSpec(
    name="sst2_sentence",
    description="SST-2 sentence-level split of FLAT Table 1 (6,920 / 872 / 1,821)",
    mirror_folder="sst2_sentence", label_names=("negative", "positive"),
    hub=HubSource("gpt3mix/sst2", splits={"train": "train", "validation": "validation", "test": "test"}),
    train="train", validation="validation", test="test", carve={},
))
_add(DatasetSpec(
    name="mr",
    description="Movie Review polarity (Pang & Lee 2005), HF rotten_tomatoes 80/10/10 cut",
    mirror_folder="mr", label_names=("neg", "pos"),
    hub=HubSource("cornell-movie-review-data/rotten_tomatoes",
                  splits={"train": "train", "validation": "validation", "test": "test"}),
    train="train", validation="validation", test="test", carve={},
))
_add(DatasetSpec(
    name="ag_news",
    description="AG's News topic classification (4 classes); mirror holds test + a 22,225-row train subset",
    mirror_folder="ag_news", label_names=("World", "Sports", "Business", "Sci/Tech"),
    hub=HubSource("fancyzhx/ag_news", splits={"train": "train", "test": "test"}),
    train="train", validation=None, test="test",
    carve={"default": Carve(fraction=0.1), "flat": Carve(count=6000)},
    train_subset="train_subset",
    notes="FLAT Table 1: 114K train / 6K dev / 7.6K test",
))
_add(DatasetSpec(
    name="imdb",
    description="IMDB Large Movie Review v1.0 (25k train / 25k test)",
    mirror_folder="imdb", label_names=("neg", "pos"),
    hub=HubSource("stanfordnlp/imdb", splits={"train": "train", "test": "test"}),
    train="train", validation=None, test="test",
    carve={"default": Carve(fraction=0.1), "flat": Carve(count=5000)},
    notes="FLAT Table 1: 20K train / 5K dev / 25K test",
))
_add(DatasetSpec(
    name="qnli",
    description="GLUE QNLI (question, sentence) entailment; GLUE dev is the test split",
    mirror_folder="qnli", label_names=("entailment", "not_entailment"),
    hub=HubSource("nyu-mll/glue", "qnli", splits={"train": "train", "validation": "validation"},
                  text_fields=("question", "sentence")),
    train="train", validation=None, test="validation", carve=ONE_TENTH,
    text_fields=("text_a", "text_b"),
))
_add(DatasetSpec(
    name="trec",
    description="TREC question classification, 6 coarse classes (5,452 train / 500 test)",
    mirror_folder="trec", label_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
    hub=HubSource("CogComp/trec", splits={"train": "train", "test": "test"}, label_field="coarse_label"),
    train="train", validation=None, test="test",
    carve={"default": Carve(fraction=0.1), "flat": Carve(count=452)},
    notes="FLAT Table 1: 5,000 train / 452 dev / 500 test",
))
_add(DatasetSpec(
    name="advglue_sst2",
    description="AdvGLUE SST-2 dev (148 human-validated adversarial sentences): static evaluation set",
    mirror_folder="advglue", label_names=("negative", "positive"),
    hub=HubSource("AI-Secure/adv_glue", "adv_sst2", splits={"sst2_dev": "validation"},
                  text_fields=("sentence",)),
    train=None, validation=None, test="sst2_dev", carve={}, static_eval_for=("sst2", "sst2_sentence"),
))
_add(DatasetSpec(
    name="advglue_qnli",
    description="AdvGLUE QNLI dev (148 adversarial pairs): static evaluation set",
    mirror_folder="advglue", label_names=("entailment", "not_entailment"),
    hub=HubSource("AI-Secure/adv_glue", "adv_qnli", splits={"qnli_dev": "validation"},
                  text_fields=("question", "sentence")),
    train=None, validation=None, test="qnli_dev", carve={}, static_eval_for=("qnli",),
    text_fields=("text_a", "text_b"),
))
