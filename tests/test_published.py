"""The published-results registry (leaderboard/published.py + leaderboard/published/*.yaml).

Expected counts are fixed by hand from the printed tables (rows x numeric columns); the spot
checks, cross-table identities and the check against the paper texts catch a misplaced or
mistyped cell; the schema tests write broken YAML files and read the error message.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from leaderboard.published import (
    FLAGS, KNOWN_DEFENSES, METRICS, PAPER_PREFIX, PUBLISHED_DIR, load_paper_info, load_published,
    parse_value_text, table_counts,
)
from suite.core.errors import SuiteError

PAPERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "papers"

# (paper, table) -> number of printed numeric cells = rows x numeric columns as printed.
EXPECTED_COUNTS = {
    # FLAT (AAAI 2022)
    ("flat2022", "Table 2"): 20 * 4,    # 4 models x 5 training variants; SST2, IMDB, AG, TREC
    ("flat2022", "Table 3"): 24 * 12,   # 2 attacks x 4 models x (base, adv, FLAT); 4 datasets x (AA, KT, TI)
    ("flat2022", "Table 4"): 12 * 6,    # 4 models x 3 variants; PWWS, Gene, IGA, PSO, Clare, BAE
    ("flat2022", "Table 5"): 4 * 2,     # 4 (beta, gamma) settings; SA, AA
    ("flat2022", "Table 7"): 20 * 4,    # as Table 2 (validation accuracy)
    ("flat2022", "Table 8"): 24 * 8,    # as Table 3 rows; 4 datasets x (KT, TI)
    ("flat2022", "Table 9"): 3 * 2,     # 3 correlation pairs; r, p-value
    ("flat2022", "Table 10"): 5 * 2,    # 5 group numbers; SA, AA
    # Adaptive AT
    ("adaptiveat2025", "Table 2"): 11 * 5,  # 11 methods; Clean, TextFooler, TextBugger, BAE, AdvGLUE
    ("adaptiveat2025", "Table 3"): 11 * 5,  # same on QNLI
    ("adaptiveat2025", "Table 4"): 11 * 4,  # IMDB: no AdvGLUE column
    ("adaptiveat2025", "Table 5"): 11 * 4,  # AGNEWS: no AdvGLUE column
    ("adaptiveat2025", "Table 7"): 6 * 4,   # 2 datasets x 3 methods; (RoBERTa, BERT) x (Clean, RA)
    ("adaptiveat2025", "Table 8"): 5 * 4,   # 5 models; Acc., Pre., Recall, F1
    ("adaptiveat2025", "Table 9"): 6 * 3,   # 2 backbones x (base, +PGD, +Ours); Clean, TextFooler, AdvGLUE
    ("adaptiveat2025", "Table 10"): 6 * 2,  # 3 methods x (base, +Ours); SST-2, QNLI
    # CARL / RAR
    ("carl_rar", "Table 2"): 4 * 4,     # ALBERT, FreeLB, CARL, RAR; 4 datasets
    ("carl_rar", "Table 4"): 8 * 2,     # (Cosine, Euclidean) x 4 methods; 2 norms
    ("carl_rar", "Table 5"): 4 * 3,     # 4 methods; 3 norms
    ("carl_rar", "Table 7"): 4 * 1,     # 4 methods; #Parameters
    # Robust instances
    ("robustinstances2023", "Table 1"): 10 * 2,   # 2 datasets x 5 baselines; Accuracy, Robustness
    ("robustinstances2023", "Table 2"): 6 * 2,    # 2 datasets x 3 rows; Accuracy, Robustness
    ("robustinstances2023", "Table 3"): 21 * 7,   # 3 datasets x 7 methods; Clean + 3 attacks x (Aua, #Query)
    ("robustinstances2023", "Table 6"): 12 * 6,   # 2 datasets x 2 statistics x 3 regions; 3 sizes x (Clean, Aua)
    ("robustinstances2023", "Table 7"): 12 * 6,   # 2 datasets x 3 regions x 2 regularisations; 3 sizes x 2
    ("robustinstances2023", "Table 8"): 16 * 6,   # 2 datasets x 8 regions; 3 sizes x 2
    # WETAR
    ("wetar2022", "Table 1"): 18 * 10,  # 3 datasets x 6 methods; Clean + 3 attacks x (Aua, Suc, #Query)
    ("wetar2022", "Table 2"): 9 * 6,    # 9 training methods; Clean + 5 attacks
}


def one(paper: str, table: str, **fields):
    """The single record of ``paper``/``table`` whose fields (settings items included) match."""
    settings = fields.pop("settings", {})
    found = [r for r in load_published(paper) if r.table == table
             and all(getattr(r, k) == v for k, v in fields.items())
             and all((r.settings or {}).get(k) == v for k, v in settings.items())]
    assert len(found) == 1, f"{paper} {table} {fields} {settings}: {len(found)} records"
    return found[0]


def test_registry_loads_and_counts_match_the_printed_tables():
    assert table_counts() == EXPECTED_COUNTS
    records = load_published()
    assert len(records) == sum(EXPECTED_COUNTS.values()) == 1709
    assert {r.paper for r in records} == {"flat2022", "adaptiveat2025", "carl_rar", "robustinstances2023", "wetar2022"}
    assert len(load_published("carl_rar")) == 48
    for paper, info in load_paper_info().items():
        assert info.protocol_facts and all("ref" in fact for fact in info.protocol_facts.values()), paper
        assert set(info.citation) >= {"title", "authors", "venue", "year"}


def test_flat_spot_checks():
    pwws_sst2 = dict(eval_attack="pwws", metric="aua", defense="finetune", dataset="sst2_sentence")
    assert one("flat2022", "Table 3", backbone="cnn", **pwws_sst2).value == 8.29
    assert one("flat2022", "Table 3", backbone="lstm", **pwws_sst2).value == 11.64
    pwws_trec = dict(pwws_sst2, dataset="trec")
    assert one("flat2022", "Table 3", backbone="cnn", **pwws_trec).value == 54.20
    assert one("flat2022", "Table 3", backbone="lstm", **pwws_trec).value_text == "54.40"
    clean = dict(metric="clean", defense="finetune", dataset="sst2_sentence")
    assert one("flat2022", "Table 2", backbone="cnn", **clean).value == 84.18
    assert one("flat2022", "Table 2", backbone="lstm", **clean).value_text == "84.40"
    # a Textfooler DeBERTa row that the extraction printed under the 'PWWS' label
    deberta = one("flat2022", "Table 3", backbone="deberta-base", defense="flat", dataset="imdb", metric="aua",
                  eval_attack="textfooler")
    assert (deberta.value, deberta.train_attack, deberta.flags) == (24.62, "textfooler", ("garbled",))
    assert one("flat2022", "Table 4", backbone="cnn", defense="flat", eval_attack="clare").value == 17.57
    assert one("flat2022", "Table 8", backbone="deberta-base", defense="flat", eval_attack="pwws",
               dataset="trec", metric="topk_intersection").value == 0.81
    assert one("flat2022", "Table 9", metric="p_value", settings={"pair": "WI-SF"}).value == pytest.approx(5.79e-5)
    assert one("flat2022", "Table 5", metric="aua", settings={"beta": 0, "gamma": 0}).value == 8.35


def test_adaptive_at_spot_checks():
    ours = one("adaptiveat2025", "Table 2", defense="freelb+adaptive", eval_attack="advglue")
    assert (ours.value, ours.delta, ours.value_text) == (38.53, 8.40, "38.53 (+8.40)")
    assert ours.dataset == "sst2" and ours.settings == {"evaluation_set": "advglue_sst2"}
    assert one("adaptiveat2025", "Table 3", defense="tavat+adaptive", eval_attack="textbugger").value == 20.30
    assert one("adaptiveat2025", "Table 5", defense="trades", metric="clean").value == 89.42
    assert one("adaptiveat2025", "Table 9", backbone="deberta-v3-base", defense="pgd+adaptive",
               eval_attack="advglue").value == 67.34
    timing = one("adaptiveat2025", "Table 10", defense="tavat+adaptive", dataset="sst2")
    assert (timing.metric, timing.value, timing.unit) == ("epoch_time", 1013.0, "s")


def test_carl_rar_spot_checks():
    rar = one("carl_rar", "Table 2", defense="rar", dataset="paper:yelp-p")
    assert (rar.value, rar.value_text, rar.delta) == (94.4, "94.4(+0.47)", 0.47)
    assert one("carl_rar", "Table 4", defense="carl", metric="euclidean", settings={"epsilon": 0.075}).value == 4.668
    assert one("carl_rar", "Table 5", defense="finetune", settings={"epsilon": 0.075}).value_text == "72.60"
    assert one("carl_rar", "Table 7", defense="rar").value == 11813810


def test_robust_instances_spot_checks():
    ls = one("robustinstances2023", "Table 3", dataset="ag_news", defense="robust-instances+label-smoothing",
             eval_attack="bert-attack", metric="queries")
    assert ls.value == 904.0 and ls.settings == {"proportion_pct": 50}
    assert one("robustinstances2023", "Table 3", dataset="paper:qqp", defense="finetune", eval_attack="textbugger",
               metric="aua").value == 24.3
    assert one("robustinstances2023", "Table 6", dataset="paper:qqp", metric="clean",
               settings={"statistic": "training_loss", "region": "bottom-right", "proportion_pct": 10}).value == 20.5
    assert one("robustinstances2023", "Table 8", dataset="sst2", metric="aua",
               settings={"region": "small-flip-rate", "proportion_pct": 50}).value == 12.8


def test_wetar_spot_checks():
    dyn = one("wetar2022", "Table 1", dataset="ag_news", defense="wetar-d", eval_attack="textfooler", metric="aua")
    assert (dyn.value, dyn.train_attack) == (54.4, "textfooler")
    assert one("wetar2022", "Table 1", dataset="mr", defense="freelb++", eval_attack="textbugger",
               metric="queries").value == 56.2
    assert one("wetar2022", "Table 2", defense="ada", train_attack="bert-attack", eval_attack="deepwordbug").value == 19.7


def test_names_are_suite_names_or_paper_prefixed():
    from attacks import ATTACKS
    from suite.data import DATASETS
    from suite.models.registry import BACKBONES

    def ok(name, known):
        return name in known or name.startswith(PAPER_PREFIX)

    for r in load_published():
        where = f"{r.paper} {r.table} {r.row_label} / {r.column_label}"
        assert ok(r.dataset, DATASETS), where
        assert ok(r.backbone, BACKBONES), where
        assert ok(r.defense, KNOWN_DEFENSES), where
        assert r.eval_attack == "none" or ok(r.eval_attack, ATTACKS), where
        assert r.train_attack is None or ok(r.train_attack, ATTACKS), where
        assert r.metric in METRICS and set(r.flags) <= set(FLAGS), where
        if r.eval_attack == "advglue":  # scored on the AdvGLUE set of the training dataset
            assert r.dataset in DATASETS.get(r.settings["evaluation_set"]).static_eval_for, where


def test_each_cell_has_a_unique_key_within_its_table():
    seen = {}
    for r in load_published():
        key = (r.paper, r.table, r.key())
        assert key not in seen, f"{r.paper} {r.table}: {r.row_label}/{r.column_label} duplicates {seen[key]}"
        seen[key] = f"{r.row_label}/{r.column_label}"


def test_printed_gains_equal_the_difference_to_the_base_method():
    base = {"pgd+adaptive": "pgd", "freelb+adaptive": "freelb", "tavat+adaptive": "tavat", "carl": "freelb", "rar": "freelb"}
    records = load_published()
    index = {(r.paper, r.table, r.dataset, r.backbone, r.defense, r.eval_attack, r.metric, r.key()[-1]): r for r in records}
    with_delta = [r for r in records if r.delta is not None]
    assert len(with_delta) == 54 + 16  # Adaptive AT Tables 2-5 '+Ours' cells; CARL/RAR Tables 2 and 4
    for r in with_delta:
        ref = index[(r.paper, r.table, r.dataset, r.backbone, base[r.defense], r.eval_attack, r.metric, r.key()[-1])]
        assert round(r.value - ref.value, 3) == pytest.approx(r.delta), f"{r.paper} {r.table} {r.row_label}/{r.column_label}"


def test_cross_table_identities_confirm_the_placements():
    # FLAT: Table 4's PWWS column repeats Table 3's PWWS SST2 AA of the base models (confirms the 12 + 12 split)
    for backbone in ("lstm", "cnn", "bert-base-uncased", "deberta-base"):
        t4 = one("flat2022", "Table 4", backbone=backbone, defense="finetune", eval_attack="pwws")
        t3 = one("flat2022", "Table 3", backbone=backbone, defense="finetune", eval_attack="pwws",
                 dataset="sst2_sentence", metric="aua")
        assert t4.value == t3.value
    # WETAR: Table 2's -TFL rows repeat Table 1's MR rows
    for defense, settings in [("ada", {}), ("wetar-s", {}), ("wetar-d", {})]:
        for attack in ("none", "textfooler", "bert-attack", "textbugger"):
            metric = "clean" if attack == "none" else "aua"
            t2 = one("wetar2022", "Table 2", defense=defense, train_attack="textfooler", eval_attack=attack, settings=settings)
            t1 = one("wetar2022", "Table 1", dataset="mr", defense=defense, eval_attack=attack, metric=metric, settings=settings)
            assert t1.value == t2.value
    # Robust instances: Table 6's adversarial-loss 50% columns repeat Table 1's 50% rows
    for dataset in ("sst2", "paper:qqp"):
        for region, printed in [("robust", "bottom-left"), ("non-robust", "bottom-right"), ("swing", "top")]:
            for metric in ("clean", "aua"):
                t1 = one("robustinstances2023", "Table 1", dataset=dataset, metric=metric, settings={"region": region})
                t6 = one("robustinstances2023", "Table 6", dataset=dataset, metric=metric,
                         settings={"statistic": "adversarial_loss", "region": printed, "proportion_pct": 50})
                assert t1.value == t6.value


def test_flagged_cells():
    flagged = {}
    for r in load_published():
        for flag in r.flags:
            flagged[(r.paper, r.table, flag)] = flagged.get((r.paper, r.table, flag), 0) + 1
        if r.flags:
            assert r.note, f"{r.paper} {r.table} {r.row_label}: flagged without a note"
    assert flagged == {
        ("flat2022", "Table 3", "garbled"): 3 * 12,      # Textfooler DeBERTa rows printed under 'PWWS'
        ("flat2022", "Table 8", "garbled"): 3 * 8 + 6 * 8,  # same, plus the 6 rows that lost their attack cell
        ("adaptiveat2025", "Table 7", "inferred"): 6 * 2,  # 'RoBERTa' read as roberta-base
        ("adaptiveat2025", "Table 9", "inferred"): 2 * 3,  # '+Ours' rows read as pgd+adaptive
        ("robustinstances2023", "Table 1", "inconsistent"): 2,
        ("robustinstances2023", "Table 2", "inferred"): 6,   # 'Robustness' read as TextFooler Aua%
        ("robustinstances2023", "Table 2", "inconsistent"): 2,
        ("robustinstances2023", "Table 3", "inconsistent"): 2,
        ("robustinstances2023", "Table 6", "garbled"): 72,
        ("robustinstances2023", "Table 6", "inferred"): 36,
        ("robustinstances2023", "Table 7", "garbled"): 2 * 6,
        ("robustinstances2023", "Table 7", "inferred"): 36,
        ("robustinstances2023", "Table 7", "inconsistent"): 2,
        ("robustinstances2023", "Table 8", "garbled"): 96,
        ("robustinstances2023", "Table 8", "inferred"): 48,
        ("robustinstances2023", "Table 8", "inconsistent"): 3,
        ("wetar2022", "Table 1", "inconsistent"): 2,
    }


def _tokens(line: str) -> list[str]:
    line = line.replace("<b>", "").replace("</b>", "")
    return re.sub(r"\$\\bf\s*([^$]*)\$", r"\1", line).split()


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason=f"paper texts not found at {PAPERS_DIR}")
def test_every_row_is_printed_in_the_paper_text():
    """Each row's cells appear, in order and adjacent, on one line of the paper's text."""
    infos = load_paper_info()
    rows: dict[tuple[str, str, int, str], list[str]] = {}
    for r in load_published():
        rows.setdefault((r.paper, r.table, r.position[0], r.row_label), []).extend(r.value_text.split())
    assert len(rows) == 112 + 67 + 20 + 77 + 27  # printed rows: FLAT, Adaptive AT, CARL/RAR, robust instances, WETAR
    for (paper, table, _, label), cells in rows.items():
        text = (PAPERS_DIR / infos[paper].source_text).read_text(encoding="utf-8")
        found = any(
            tokens[i:i + len(cells)] == cells
            for tokens in map(_tokens, text.splitlines()) for i in range(len(tokens) - len(cells) + 1))
        assert found, f"{paper} {table} row {label!r}: {' '.join(cells)} is not a printed row"


def test_parse_value_text():
    assert parse_value_text("91.2±0.3") == (91.2, 0.3, None)
    assert parse_value_text("88.99 (-0.12)") == (88.99, None, -0.12)
    assert parse_value_text("5.79e-5") == (5.79e-5, None, None)
    with pytest.raises(ValueError):
        parse_value_text("91.2%")


GOOD = """\
paper: demo
citation: {title: T, authors: [A], venue: V, year: 2024}
protocol_facts:
  training: {ref: "Table 9", lr: 2.0e-5}
tables:
  - table: Table 1
    defaults: {dataset: sst2, backbone: cnn, train_attack: null}
    columns:
      - {label: Clean, metric: clean, eval_attack: none}
      - {label: PWWS, metric: aua, eval_attack: pwws}
    rows:
      - {label: Base, defense: finetune, cells: ["84.18", "8.29"]}
"""


def _write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_a_good_file_loads(tmp_path):
    records = load_published(directory=_write(tmp_path, GOOD))
    assert [(r.metric, r.value, r.value_text) for r in records] == [("clean", 84.18, "84.18"), ("aua", 8.29, "8.29")]


@pytest.mark.parametrize("old, new, message", [
    ("{label: Base, defense", "{label: Base, colour: red, defense",
     "demo.yaml: Table 1, row 1 'Base': unknown key(s) 'colour'"),
    ("defaults: {dataset: sst2, backbone: cnn, train_attack: null}", "defaults: {dataset: sst2, backbone: cnn}",
     "demo.yaml: Table 1, row 1 'Base', column 1 'Clean': missing field(s) train_attack"),
    ("metric: aua", "metric: accuracy",
     "demo.yaml: Table 1, row 1 'Base', column 2 'PWWS': unknown metric 'accuracy'"),
    ('"8.29"]', '"8.29%"]', "demo.yaml: Table 1, row 1 'Base', column 2 'PWWS': value '8.29%' is not a number"),
    ('"84.18"', "84.18", "column 1 'Clean': cell 84.18 must be a quoted string"),
    ('"8.29"]', "]", "demo.yaml: Table 1, row 1 'Base': 1 cells for 2 columns"),
    ("defense: finetune", "defense: my-defense", "defense 'my-defense' is neither in KNOWN_DEFENSES nor prefixed 'paper:'"),
    ("eval_attack: none}", "eval_attack: pwws}", "column 1 'Clean': metric 'clean' is measured without an attack"),
    ("  training: {ref: \"Table 9\", lr: 2.0e-5}", "  training: {lr: 2.0e-5}",
     "demo.yaml: protocol_facts.training: each fact must be a mapping with a 'ref'"),
    ("paper: demo", "paper: other", "demo.yaml: file name must be the paper key: other.yaml"),
])
def test_schema_errors_name_the_file_and_the_record(tmp_path, old, new, message):
    assert old in GOOD
    directory = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SuiteError) as error:
        load_published(directory=directory)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_flag_without_note_and_unknown_paper_are_errors(tmp_path):
    directory = _write(tmp_path, GOOD.replace('cells: ["84.18"', 'cells: [{text: "84.18", flags: [garbled]}'))
    with pytest.raises(SuiteError, match="row 1 'Base', column 1 'Clean': a flag needs a note beside it"):
        load_published(directory=directory)
    with pytest.raises(SuiteError, match=r"unknown paper 'flat' .*known: adaptiveat2025, carl_rar, flat2022"):
        load_published("flat")
    assert PUBLISHED_DIR.is_dir()
