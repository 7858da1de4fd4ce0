"""Mirror loading, integrity checks and the protocol splits."""
from __future__ import annotations

import os

import pytest

from conftest import make_rows, write_split
from suite.data import SplitOptions, load_protocol_splits
from suite.data.splits import load_test_split
from suite.core.errors import IntegrityError, MissingDataError, SuiteError


# --- the real mirror ------------------------------------------------------------------------

def test_sst2_sentence_sizes(mirror) -> None:
    splits = load_protocol_splits("sst2_sentence")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6920, 872, 1821)
    assert splits.provenance["source"] == "mirror"
    assert set(splits.provenance["sha256"]) == {"train", "validation", "test"}
    assert splits.provenance["validation_rule"] == "source split 'validation'"
    assert splits.provenance["test_is_full_split"] is True
    first = splits.train[0]
    assert first.id == "train/0" and len(first.texts) == 1 and first.label in (0, 1)
    assert {ex.label for ex in splits.test} == {0, 1}


def test_missing_ag_news_train_names_split_and_fix(mirror) -> None:
    with pytest.raises(MissingDataError) as info:
        load_protocol_splits("ag_news")
    message = str(info.value)
    assert "ag_news: split 'train' is not in the mirror" in message
    assert "train_subset" in message and "use_train_subset: true" in message
    assert "SUITE_DATA_SOURCE=hub" in message
    assert "\n" not in message


def test_missing_qnli_train_names_split_and_fix(mirror) -> None:
    with pytest.raises(MissingDataError) as info:
        load_protocol_splits("qnli")
    message = str(info.value)
    assert "qnli: split 'train' is not in the mirror" in message
    assert "(it has: validation)" in message
    assert "add train.jsonl.gz with its sha256 to MANIFEST.json" in message
    assert "use_train_subset" not in message  # qnli has no subset to opt into


def test_ag_news_train_subset_is_recorded(mirror) -> None:
    splits = load_protocol_splits("ag_news", SplitOptions(scheme="flat", use_train_subset=True,
                                                          train_limit=50, validation_limit=20, test_limit=30))
    subs = splits.provenance["substitutions"]
    assert len(subs) == 1 and "train_subset" in subs[0]
    assert "train_subset" in splits.provenance["sha256"]
    assert "carved from 'train_subset': 6000 rows, scheme 'flat'" in splits.provenance["validation_rule"]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (50, 20, 30)
    assert all(ex.id.startswith("train_subset/") for ex in splits.train + splits.validation)
    assert splits.provenance["test_is_full_split"] is False
    assert splits.num_labels == 4


def test_use_train_subset_without_subset_is_an_error(mirror) -> None:
    with pytest.raises(SuiteError, match="trec has no train subset"):
        load_protocol_splits("trec", SplitOptions(use_train_subset=True))


def test_trec_flat_split_is_deterministic_and_disjoint(mirror) -> None:
    a = load_protocol_splits("trec", SplitOptions(scheme="flat"))
    b = load_protocol_splits("trec", SplitOptions(scheme="flat"))
    ids = lambda exs: [ex.id for ex in exs]  # noqa: E731
    assert ids(a.train) == ids(b.train)
    assert ids(a.validation) == ids(b.validation)
    assert len(a.validation) == 452
    assert len(a.train) == 5000
    assert len(a.test) == 500
    assert not set(ids(a.train)) & set(ids(a.validation))
    assert len(set(ids(a.train)) | set(ids(a.validation))) == 5452
    assert "452 rows, scheme 'flat', seed 2024" in a.provenance["validation_rule"]


def test_trec_default_scheme_holds_out_one_tenth(mirror) -> None:
    splits = load_protocol_splits("trec")
    assert len(splits.validation) == round(5452 / 10) == 545
    assert len(splits.train) == 5452 - 545
    assert "scheme 'default'" in splits.provenance["validation_rule"]


def test_split_seed_changes_the_carve(mirror) -> None:
    a = load_protocol_splits("trec", SplitOptions(scheme="flat", split_seed=2024))
    b = load_protocol_splits("trec", SplitOptions(scheme="flat", split_seed=7))
    assert len(b.validation) == 452
    assert {ex.id for ex in a.validation} != {ex.id for ex in b.validation}
    assert [ex.id for ex in a.test] == [ex.id for ex in b.test]  # the test split is fixed


def test_limits_are_deterministic_subsets(mirror) -> None:
    opts = SplitOptions(scheme="flat", train_limit=40, validation_limit=10, test_limit=15)
    a = load_protocol_splits("trec", opts)
    b = load_protocol_splits("trec", opts)
    full = load_protocol_splits("trec", SplitOptions(scheme="flat"))
    assert (len(a.train), len(a.validation), len(a.test)) == (40, 10, 15)
    assert [ex.id for ex in a.train] == [ex.id for ex in b.train]
    assert [ex.id for ex in a.test] == [ex.id for ex in b.test]
    assert {ex.id for ex in a.train} <= {ex.id for ex in full.train}
    assert {ex.id for ex in a.validation} <= {ex.id for ex in full.validation}
    assert a.provenance["sizes"] == {"train": 40, "validation": 10, "test": 15}


def test_sst2_test_is_glue_dev(mirror) -> None:
    test = load_test_split("sst2")
    assert len(test) == 872
    assert all(ex.id.startswith("validation/") for ex in test)


def test_qnli_test_examples_are_pairs(mirror) -> None:
    test = load_test_split("qnli")
    assert len(test) > 0
    assert all(len(ex.texts) == 2 for ex in test[:100])
    ex = test[0]
    assert ex.texts[0] != ex.texts[1] and ex.texts[0].strip() and ex.texts[1].strip()


def test_advglue_sst2_is_test_only(mirror) -> None:
    splits = load_protocol_splits("advglue_sst2")
    assert splits.train == [] and splits.validation == []
    assert len(splits.test) == 148
    assert all(len(ex.texts) == 1 for ex in splits.test)


def test_missing_mirror_folder_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SUITE_DATA_SOURCE", "mirror")
    with pytest.raises(MissingDataError, match="no mirror folder 'trec'"):
        load_protocol_splits("trec")


def test_bad_data_source_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv("SUITE_DATA_SOURCE", "cloud")
    with pytest.raises(SuiteError, match="SUITE_DATA_SOURCE='cloud'"):
        load_protocol_splits("trec")


# --- a tiny mirror built by the test ---------------------------------------------------------

def test_tmp_mirror_loads_and_carves(tmp_mirror) -> None:
    tmp_mirror("trec", {"train": make_rows(100, num_labels=6), "test": make_rows(20, "test", 6)})
    splits = load_protocol_splits("trec")
    assert (len(splits.train), len(splits.validation)) == (90, 10)
    assert splits.test[3].texts == ("test number 3",) and splits.test[3].label == 3


def test_sha256_mismatch_raises_integrity_error(tmp_mirror) -> None:
    folder = tmp_mirror("sst2_sentence",
                        {"train": make_rows(10), "validation": make_rows(4), "test": make_rows(4)},
                        sha256={"train": "0" * 64})
    with pytest.raises(IntegrityError) as info:
        load_protocol_splits("sst2_sentence")
    message = str(info.value)
    assert str(folder / "train.jsonl.gz") in message
    assert "sha256 mismatch" in message and "000000000000" in message


def test_file_edited_after_verification_is_caught(tmp_mirror) -> None:
    folder = tmp_mirror("sst2_sentence",
                        {"train": make_rows(10), "validation": make_rows(4), "test": make_rows(4)})
    assert len(load_protocol_splits("sst2_sentence").train) == 10
    path = folder / "test.jsonl.gz"
    stat = path.stat()
    write_split(path, make_rows(5, "tampered"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    with pytest.raises(IntegrityError, match="test.jsonl.gz"):
        load_protocol_splits("sst2_sentence")


def test_file_listed_but_missing(tmp_mirror) -> None:
    folder = tmp_mirror("sst2_sentence",
                        {"train": make_rows(10), "validation": make_rows(4), "test": make_rows(4)})
    (folder / "validation.jsonl.gz").unlink()
    with pytest.raises(MissingDataError, match="validation.jsonl.gz is listed in its MANIFEST but missing"):
        load_protocol_splits("sst2_sentence")


def test_missing_manifest(tmp_mirror) -> None:
    folder = tmp_mirror("trec", {"train": make_rows(10), "test": make_rows(4)})
    (folder / "MANIFEST.json").unlink()
    with pytest.raises(MissingDataError, match="no MANIFEST.json"):
        load_protocol_splits("trec")


# --- content that passes the sha256 check but is bad (issue 10) -------------------------------------------

def _raw_split(folder, split: str, raw: bytes) -> None:
    """Replace ``split`` with ``raw`` (gzip bytes) and record their true sha256 in the MANIFEST."""
    import hashlib
    import json

    (folder / f"{split}.jsonl.gz").write_bytes(raw)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    manifest["splits"][split]["sha256"] = hashlib.sha256(raw).hexdigest()
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("lines, message", [
    ([b'{"text": "a", "label": 0}', b'{"text": "caf\xe9", "label": 1}'], "line 2 is not UTF-8"),
    ([b'{"text": "a", "label": 0}', b'{"text": "no label"}'], "line 2: no 'label'"),
    ([b'{"text": "a", "label": 0}', b"", b'{"text": "b", "label": 7}'], "line 3: label 7 is outside sst2_sentence's 2 classes"),
    ([b'{"label": 1}'], "line 1: no 'text' field"),
    ([b'{"text": "a", "label": "1"}'], "line 1: label '1' is not a class index"),
    ([b'{"text": "a", "label": 0'], "line 1 is not valid JSON"),
])
def test_bad_rows_name_the_file_and_line(tmp_mirror, lines, message) -> None:
    import gzip

    folder = tmp_mirror("sst2_sentence", {"train": make_rows(10), "validation": make_rows(4), "test": make_rows(4)})
    _raw_split(folder, "test", gzip.compress(b"\n".join(lines) + b"\n"))
    with pytest.raises(IntegrityError) as info:
        load_protocol_splits("sst2_sentence")
    text = str(info.value)
    assert text.startswith(f"{folder / 'test.jsonl.gz'}: {message}") and "\n" not in text
    assert "rebuild this file" in text


def test_truncated_gzip_and_bad_manifest_are_integrity_errors(tmp_mirror) -> None:
    import gzip

    folder = tmp_mirror("trec", {"train": make_rows(30, num_labels=6), "test": make_rows(5, num_labels=6)})
    whole = gzip.compress(b"".join(b'{"text": "t %d", "label": 0}\n' % i for i in range(50)))
    _raw_split(folder, "test", whole[:-12])
    with pytest.raises(IntegrityError, match=r"test\.jsonl\.gz: not a complete gzip file"):
        load_test_split("trec")
    (folder / "MANIFEST.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(IntegrityError, match=r"MANIFEST\.json: not valid JSON \(line 1, column 2"):
        load_test_split("trec")


def test_blank_lines_keep_the_example_ids(tmp_mirror) -> None:
    import gzip

    folder = tmp_mirror("trec", {"train": make_rows(30, num_labels=6), "test": make_rows(5, num_labels=6)})
    _raw_split(folder, "test", gzip.compress(b'{"text": "a", "label": 1}\n\n{"text": "b", "label": 2}\n'))
    assert [(ex.id, ex.texts, ex.label) for ex in load_test_split("trec")] == [
        ("test/0", ("a",), 1), ("test/1", ("b",), 2)]


def test_a_data_dir_that_does_not_exist_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SUITE_DATA_SOURCE", "auto")
    with pytest.raises(MissingDataError, match=r"SUITE_DATA_DIR=.*nowhere does not exist; point it at the dataset mirror"):
        load_test_split("trec")
