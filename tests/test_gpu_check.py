"""benchmarks/gpu_check.py (the prepared GPU check of adaptive_at Table 10), run on CPU with --tiny."""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SHELL = REPO / "benchmarks" / "gpu_check.sh"
ADVERSARIAL = ("pgd", "freelb", "tavat", "pgd+adaptive", "freelb+adaptive", "tavat+adaptive")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    before = os.environ.get("TQDM_DISABLE")
    module = _load()  # sets TQDM_DISABLE when unset (for a run as a script): undo it here
    if before is None:
        os.environ.pop("TQDM_DISABLE", None)
    return module


@pytest.fixture(scope="module")
def tiny_run(gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--tiny`` run on CPU (40 scored texts: the last chunk of 16 is filled up to 48 rows)."""
    import torch
    import transformers

    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    out = tmp_path_factory.mktemp("gpu_check") / "result.json"
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rc = gpu_check.main(["--tiny", "--device", "cpu", "--no-wrapper", "--score-texts", "40", "--out", str(out)])
    finally:  # main() is a script's: it sets the thread count and silences transformers
        torch.set_num_threads(threads)
        transformers.logging.set_verbosity(verbosity)
    assert rc == 0
    return json.loads(out.read_text(encoding="utf-8")), stdout.getvalue()


def test_every_defense_is_timed_with_k5(tiny_run: tuple[dict[str, Any], str], gpu_check: ModuleType) -> None:
    result, _ = tiny_run
    rows = {r["defense"]: r for r in result["rows"]}
    assert list(rows) == list(gpu_check.DEFENSE_NAMES)
    for name, row in rows.items():
        assert row["seconds"] > 0 and row["s_per_step"] == pytest.approx(row["seconds"] / 3)
    for name in ADVERSARIAL:  # the defense really ran with k = 5 (FreeLB's and TA-VAT's defaults are 2)
        assert rows[name]["config"]["perturbation"]["steps"] == 5, name
    assert "perturbation" not in rows["finetune"]["config"]
    settings = result["settings"]
    assert settings["steps_per_epoch"] == math.ceil(67_349 / 32) == 2105
    assert settings["suite_protocol_train"] == 67_349 - 6_735
    assert (settings["batch_size"], settings["length"], settings["adv_steps"], settings["tiny"]) == (32, 64, 5, True)


def test_ratios_come_from_the_measured_seconds(tiny_run: tuple[dict[str, Any], str]) -> None:
    result, _ = tiny_run
    rows = {r["defense"]: r for r in result["rows"]}
    finetune, pgd = rows["finetune"]["s_per_epoch"], rows["pgd"]["s_per_epoch"]
    for name, row in rows.items():
        assert row["s_per_epoch"] == pytest.approx(row["s_per_step"] * 2105)
        assert row["suite_protocol_epoch_s"] == pytest.approx(row["s_per_step"] * math.ceil(60_614 / 32))
        assert row["ratio_to_finetune"] == pytest.approx(row["s_per_epoch"] / finetune)
        assert row["ratio_to_pgd"] == pytest.approx(row["s_per_epoch"] / pgd)
    for name in ("pgd", "freelb", "tavat"):
        base = rows[name]["s_per_epoch"]
        assert rows[f"{name}+adaptive"]["ratio_to_base"] == pytest.approx(rows[f"{name}+adaptive"]["s_per_epoch"] / base)
        assert rows[name]["ratio_to_base"] is None
    for name in ADVERSARIAL:  # five ascent passes and a descent pass against one forward/backward
        assert rows[name]["ratio_to_finetune"] > 1.0, name


def test_table10_is_mapped_row_by_row(tiny_run: tuple[dict[str, Any], str]) -> None:
    """adaptive_at Table 10, SST-2: PGD 902, +Ours 912, FreeLB 781, +Ours 920, TA-VAT 853, +Ours 1013."""
    result, _ = tiny_run
    rows = {r["defense"]: r for r in result["rows"]}
    expected = {"finetune": None, "pgd": 902, "pgd+adaptive": 912, "freelb": 781, "freelb+adaptive": 920,
                "tavat": 853, "tavat+adaptive": 1013}
    assert {n: r["table10_s"] for n, r in rows.items()} == expected
    assert rows["freelb+adaptive"]["table10_ratio_to_base"] == pytest.approx(920 / 781)
    assert rows["tavat"]["table10_ratio_to_pgd"] == pytest.approx(853 / 902)
    assert rows["finetune"]["table10_ratio_to_pgd"] is None


def test_printed_table_matches_the_json(tiny_run: tuple[dict[str, Any], str]) -> None:
    result, printed = tiny_run
    lines = {line.split()[0]: line for line in printed.splitlines() if line.strip()}
    for row in result["rows"]:
        line = lines[row["defense"]]
        assert f"{row['s_per_epoch']:.1f}" in line and f"{row['ratio_to_finetune']:.2f}" in line
        if row["table10_s"] is not None:
            assert f"{row['table10_s']:.0f}" in line
    assert "epoch = 2,105 steps" in printed


def test_scoring_runs_the_wrappers_chunks(tiny_run: tuple[dict[str, Any], str]) -> None:
    result, printed = tiny_run
    forward = [r for r in result["attack_scoring"] if r["mode"] == "forward"]
    assert len(forward) == 1 and forward[0]["score_batch"] == 16
    assert forward[0]["rows"] == 48 and forward[0]["texts"] == 40  # 3 chunks of 16, the last filled up
    assert forward[0]["texts_per_s"] == pytest.approx(40 / forward[0]["seconds"]) and forward[0]["seconds"] > 0
    assert [r["skipped"] for r in result["attack_scoring"] if r["mode"] == "wrapper"] == ["--no-wrapper"]
    assert "skipped (--no-wrapper)" in printed


def test_score_batch_is_the_wrappers_default(gpu_check: ModuleType) -> None:
    """gpu_check copies SuiteModelWrapper's chunk size for transformers (that module imports TextAttack)."""
    tree = ast.parse((REPO / "attacks" / "wrappers.py").read_text(encoding="utf-8"))
    values = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", "") == "DEFAULT_SCORE_BATCH" for t in node.targets)]
    assert values == [gpu_check.SCORE_BATCH]


def test_add_ratios_on_given_numbers(gpu_check: ModuleType) -> None:
    rows = [{"defense": "finetune", "s_per_step": 0.1}, {"defense": "pgd", "s_per_step": 0.4},
            {"defense": "pgd+adaptive", "s_per_step": 0.5}]
    out = {r["defense"]: r for r in gpu_check.add_ratios(rows, 10, 5)}
    assert out["pgd"]["s_per_epoch"] == pytest.approx(4.0) and out["pgd"]["suite_protocol_epoch_s"] == pytest.approx(2.0)
    assert out["pgd+adaptive"]["ratio_to_finetune"] == pytest.approx(5.0)
    assert out["pgd+adaptive"]["ratio_to_base"] == pytest.approx(1.25)
    assert out["pgd+adaptive"]["table10_ratio_to_base"] == pytest.approx(912 / 902)


def test_committed_config_is_bert_base(gpu_check: ModuleType) -> None:
    import torch
    from transformers import BertForSequenceClassification

    config = gpu_check.load_config(gpu_check.CONFIG, tiny=False)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.vocab_size, config.max_position_embeddings, config.type_vocab_size, config.hidden_act,
            config.layer_norm_eps, config.num_labels) == (768, 12, 12, 3072, 30522, 512, 2, "gelu", 1e-12, 2)
    with torch.device("meta"):  # no memory, no init
        model = BertForSequenceClassification(config)
    assert sum(p.numel() for p in model.parameters()) == 109_483_778  # bert-base-uncased + a 2-way head


def test_synthetic_batches_have_the_asked_shape(gpu_check: ModuleType) -> None:
    from suite.models.batching import make_batch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = gpu_check.synthetic_tokenizer(30522)
    examples = gpu_check.synthetic_examples(4, 64, 30522, seed=0)
    assert examples == gpu_check.synthetic_examples(4, 64, 30522, seed=0)  # seeded
    model = gpu_check.classifier(BertForSequenceClassification(BertConfig(**gpu_check.TINY)), tokenizer, 64)
    import torch

    batch = make_batch(model, examples, torch.device("cpu"), range(4))
    assert batch["input_ids"].shape == (4, 64) and bool(batch["attention_mask"].all())
    assert batch["input_ids"][:, 0].tolist() == [101] * 4 and batch["input_ids"][:, -1].tolist() == [102] * 4
    assert int(batch["input_ids"][:, 1:-1].min()) >= 1000


def test_shell_refuses_a_python_without_torch(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # no site-packages: no torch
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(SHELL), "--tiny"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPU_CHECK_PYTHON": str(fake)})
    assert done.returncode == 3
    assert done.stderr.strip().count("\n") == 0 and "lacks torch transformers" in done.stderr


@pytest.mark.slow
def test_shell_tiny_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run(["bash", str(SHELL), "--tiny", "--defenses", "finetune,pgd+adaptive", "--no-wrapper",
                           "--score-texts", "16", "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GPU_CHECK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [r["defense"] for r in rows] == ["finetune", "pgd+adaptive"] and rows[1]["ratio_to_finetune"] > 1
    assert done.stderr == ""  # no library noise


def test_scoring_through_the_engines_wrapper(resource_mirror: Path, gpu_check: ModuleType) -> None:
    """Where attacks.wrappers imports (TextAttack + the NLTK mirror), the wrapper runs the same chunks."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    why = gpu_check.wrapper_unavailable()
    if why is not None:
        pytest.skip(why)
    torch.manual_seed(0)
    model = gpu_check.classifier(BertForSequenceClassification(BertConfig(**gpu_check.TINY)),
                                 gpu_check.synthetic_tokenizer(30522), 64)
    texts = gpu_check.synthetic_texts(40, 64, 30522, seed=3)
    results = gpu_check.score_throughput(model, texts + texts[:20], [16], torch.device("cpu"), use_wrapper=True)
    forward, wrapper = results
    assert forward["rows"] == 64 and forward["texts"] == 60  # 60 texts in chunks of 16
    assert wrapper["mode"] == "wrapper" and wrapper["rows"] == 48  # the 20 repeats de-duplicated: 40 -> 3 chunks
    assert wrapper["texts_per_s"] > 0 and 0 < wrapper["forward_share"] <= 1


def test_a_failing_defense_is_reported_and_the_rest_still_written(gpu_check: ModuleType, tmp_path: Path) -> None:
    """One try on the GPU: a part that fails (here: no token-type embeddings) is recorded, exit status 1."""
    import torch

    data = json.loads(gpu_check.CONFIG.read_text(encoding="utf-8"))
    data["type_vocab_size"] = 0
    (tmp_path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    out, threads = tmp_path / "r.json", torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        rc = gpu_check.main(["--tiny", "--device", "cpu", "--config", str(tmp_path / "config.json"), "--defenses",
                             "finetune,pgd", "--score-texts", "16", "--no-wrapper", "--out", str(out)])
    torch.set_num_threads(threads)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert rc == 1 and result["rows"] == []
    assert sorted(result["errors"]) == ["attack_scoring", "finetune", "pgd"]
    assert "failed: finetune, pgd, attack_scoring" in printed.getvalue()


def test_length_beyond_the_position_embeddings_is_refused(gpu_check: ModuleType) -> None:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert gpu_check.main(["--tiny", "--device", "cpu", "--length", "600"]) == 2
    assert "max_position_embeddings (512)" in err.getvalue()
