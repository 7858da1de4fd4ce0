"""Prepared GPU check: time per epoch of the embedding-space AT defenses on BERT-base (adaptive_at Table 10).

    benchmarks/gpu_check.sh [--out result.json]     # full size, on the GPU when there is one (<= 5 min)
    benchmarks/gpu_check.sh --tiny                  # hidden 32, 2 layers, 3 steps: a CPU smoke run

Nothing is downloaded. The backbone is ``BertForSequenceClassification`` randomly initialised
from the committed ``benchmarks/configs/bert-base-uncased/config.json`` (109,483,778 parameters),
wrapped in the suite's ``HFClassifier``; its tokenizer is a word-level tokenizer built in memory
(token ``t<i>`` is id ``i``, BERT's ids for [PAD] [UNK] [CLS] [SEP] [MASK]), so the suite's own
``encode`` / ``make_batch`` path runs. The data is SST-2-shaped: sentences of exactly
``--length`` tokens ([CLS] + random words + [SEP], seeded), random labels, batches of
``--batch-size``. Random weights make accuracy meaningless; timings are not. (The suite pads a
batch to its longest sentence: real SST-2 train batches of 32 average 40 tokens with the
bert-base-uncased vocabulary, so 64 overstates the suite's tokens per step; adaptive_at does not
give its length, and trains with batch 128, §5.3.)

Each defense (finetune, pgd, freelb, tavat and their +adaptive versions, ``perturbation.steps`` =
k = 5 for all, as Table 10's caption says) is trained by the suite's trainer
(``suite.run.training.train``: make_batch, zero_grad, ``training_step``, clipping, AdamW and
scheduler step, ``after_optimizer_step``) for ``--warmup`` steps, then for ``--steps`` timed steps
(the trainer's CUDA-synchronised ``EpochTimer``). Seconds per step x ceil(67,349 / batch) =
the extrapolated epoch: 67,349 is the full GLUE SST-2 train split, which adaptive_at trains on
(its Table 1); the suite's ``sst2`` protocol holds out a tenth for validation and trains on
60,614 (``suite_protocol_epoch_s`` in the JSON). Seeding follows the suite (``seed_everything``,
i.e. ``deterministic_mode``) unless ``--nondeterministic``.

adaptive_at Table 10 (SST-2, BERT-base, RTX 3090, batch 128 per its §5.3, k = 5), read from the
paper's rows: PGD 902, +Ours 912, FreeLB 781, +Ours 920, TA-VAT 853, +Ours 1013 seconds. It has
no fine-tuning row, so its ratios are given against PGD and against each method's base.

Attack engine on this device: a real attack needs TextAttack, NLTK and WordNet from the
resource mirror, which the GPU machine does not have. What is measured is the engine's
model-scoring rate: ``--score-texts`` distinct synthetic candidate texts of ``--length`` tokens
scored in the batch-invariant wrapper's fixed chunks (``attacks.wrappers``: ``score_batch`` rows
per forward, a short chunk filled up by repeating its last row, eval mode, no grad, logits to CPU
per chunk), timed on the forward passes alone (``forward``), and, where ``attacks.wrappers``
imports (TextAttack and the NLTK data present), end to end through ``SuiteModelWrapper`` (encode,
de-duplication, grouping, chunks: ``wrapper``). Both are upper bounds of a real attack's
examples/s, which also pays the search (WordNet look-ups, constraints) on the CPU.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TQDM_DISABLE", "1")  # the trainer's progress bars
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a plain checkout (the GPU machine installs nothing)
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

CONFIG = REPO / "benchmarks" / "configs" / "bert-base-uncased" / "config.json"
DEFENSE_NAMES = ("finetune", "pgd", "freelb", "tavat", "pgd+adaptive", "freelb+adaptive", "tavat+adaptive")
BASE_OF = {"pgd+adaptive": "pgd", "freelb+adaptive": "freelb", "tavat+adaptive": "tavat"}
#: adaptive_at Table 10, SST-2 column (seconds per epoch; "+Ours" rows follow their base method)
TABLE10_SST2 = {"pgd": 902.0, "pgd+adaptive": 912.0, "freelb": 781.0, "freelb+adaptive": 920.0,
                "tavat": 853.0, "tavat+adaptive": 1013.0}
SST2_TRAIN = 67_349  # GLUE SST-2 train (adaptive_at Table 1)
#: rows per forward of ``attacks.wrappers.SuiteModelWrapper`` for a transformer (its DEFAULT_SCORE_BATCH;
#: not imported from there because that module imports TextAttack)
SCORE_BATCH = 16
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
SPECIAL_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
FIRST_WORD_ID = 1000  # bert-base-uncased's ids below 1000 are [unused] and special tokens


def load_config(path: Path, tiny: bool) -> Any:
    """The committed BERT config (``--tiny``: :data:`TINY`'s sizes over it)."""
    from transformers import BertConfig

    data = json.loads(path.read_text(encoding="utf-8"))
    if tiny:
        data.update(TINY)
    return BertConfig.from_dict(data)


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level fast tokenizer over ``t<i>`` -> ``i`` with BERT's special ids and templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {SPECIAL_IDS.get(i, f"t{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def synthetic_texts(n: int, length: int, vocab_size: int, seed: int) -> list[str]:
    """``n`` seeded sentences of ``length - 2`` words, i.e. ``length`` tokens with [CLS] and [SEP]."""
    if length < 3:
        raise SystemExit(f"gpu_check: --length must be >= 3 (it counts [CLS] and [SEP]), got {length}")
    low = FIRST_WORD_ID if vocab_size > 2 * FIRST_WORD_ID else max(SPECIAL_IDS) + 1
    ids = torch.randint(low, vocab_size, (n, length - 2), generator=torch.Generator().manual_seed(seed))
    return [" ".join(f"t{i}" for i in row) for row in ids.tolist()]


def synthetic_examples(n: int, length: int, vocab_size: int, seed: int) -> list[Any]:
    from suite.data.examples import Example

    labels = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    texts = synthetic_texts(n, length, vocab_size, seed)
    return [Example(f"synthetic/{i}", (t,), y) for i, (t, y) in enumerate(zip(texts, labels))]


def classifier(hf_model: Any, tokenizer: Any, length: int) -> Any:
    from suite.models.transformer import HFClassifier

    return HFClassifier(hf_model, tokenizer, length, "bert-base-uncased (random init)", _shown(CONFIG))


def defense_options(name: str, adv_steps: int) -> dict[str, Any]:
    """``perturbation.steps = k`` for every defense with a perturbation (the others' settings kept)."""
    from defenses import DEFENSES

    fields = {f.name for f in dataclasses.fields(DEFENSES.get(name).Config)}
    return {"perturbation": {"steps": adv_steps}} if "perturbation" in fields else {}


def seed(value: int, deterministic: bool) -> None:
    from suite.core.seeding import seed_everything

    if deterministic:
        seed_everything(value)
    else:
        import random

        import numpy as np

        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        torch.use_deterministic_algorithms(False)


def time_defense(name: str, hf_model: Any, tokenizer: Any, examples: Sequence[Any], args: argparse.Namespace,
                 device: torch.device) -> dict[str, Any]:
    """Train a copy of ``hf_model`` with defense ``name``: ``warmup`` steps, then ``steps`` timed ones."""
    from defenses import DEFENSES, TrainingContext
    from suite.core.typed import from_mapping
    from suite.run.config import TrainConfig
    from suite.run.training import train

    seed(args.seed, not args.nondeterministic)
    cls = DEFENSES.get(name)
    options = defense_options(name, args.adv_steps)
    defense = cls(from_mapping(cls.Config, options, f"gpu_check: {name}"), classifier(copy.deepcopy(hf_model),
                                                                                        tokenizer, args.length))
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=2e-5, select="last", max_grad_norm=1.0)
    b = args.batch_size
    context = TrainingContext(train=list(examples[:args.warmup * b]), validation=[], device=device, seed=args.seed)
    if args.warmup:
        train(defense, context, cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    context.train, context.protocol_train = list(examples[:args.steps * b]), None
    seconds = train(defense, context, cfg).epoch_seconds[0]
    row = {"defense": name, "options": options, "config": dataclasses.asdict(defense.config), "steps": args.steps,
           "seconds": seconds, "s_per_step": seconds / args.steps}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del defense, context
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def add_ratios(rows: list[dict[str, Any]], steps_per_epoch: int, protocol_steps: int) -> list[dict[str, Any]]:
    """Extrapolated epochs and every ratio, from the measured seconds (and Table 10's)."""
    by_name = {r["defense"]: r for r in rows}
    for r in rows:
        r["s_per_epoch"] = r["s_per_step"] * steps_per_epoch
        r["suite_protocol_epoch_s"] = r["s_per_step"] * protocol_steps
    for r in rows:
        name, base = r["defense"], BASE_OF.get(r["defense"])
        r["ratio_to_finetune"] = r["s_per_epoch"] / by_name["finetune"]["s_per_epoch"] if "finetune" in by_name else None
        r["ratio_to_pgd"] = r["s_per_epoch"] / by_name["pgd"]["s_per_epoch"] if "pgd" in by_name else None
        r["ratio_to_base"] = r["s_per_epoch"] / by_name[base]["s_per_epoch"] if base in by_name else None
        r["table10_s"] = TABLE10_SST2.get(name)
        r["table10_ratio_to_pgd"] = TABLE10_SST2[name] / TABLE10_SST2["pgd"] if name in TABLE10_SST2 else None
        r["table10_ratio_to_base"] = TABLE10_SST2[name] / TABLE10_SST2[base] if base else None
    return rows


def _score_chunks(model: Any, encoded: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> int:
    """The wrapper's forward schedule for rows of one length: chunks of ``batch_size`` rows, the last
    filled up with its last row, logits to CPU per chunk; returns the rows run."""
    n, rows = encoded["input_ids"].shape[0], 0
    for start in range(0, n, batch_size):
        chunk = list(range(start, min(n, start + batch_size)))
        index = torch.tensor(chunk + [chunk[-1]] * (batch_size - len(chunk)))
        model({k: v[index].to(device) for k, v in encoded.items()}).logits.float().cpu()
        rows += len(index)
    return rows


def wrapper_unavailable() -> str | None:
    """Why ``attacks.wrappers`` cannot be used here (None: it can)."""
    if importlib.util.find_spec("textattack") is None:
        return "textattack is not installed (the engine's wrapper imports it)"
    try:
        import attacks.wrappers  # noqa: F401  (prepares the offline NLTK data, imports TextAttack)
    except Exception as exc:  # MissingDataError without the resource mirror, ImportError of a dependency...
        return f"attacks.wrappers does not import: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


def score_throughput(model: Any, texts: list[str], batch_sizes: Sequence[int], device: torch.device,
                     use_wrapper: bool) -> list[dict[str, Any]]:
    """Candidate texts scored per second in the engine's fixed chunks (see the module docstring)."""
    from suite.run.protocol import EpochTimer

    model.to(device).eval()
    encoded = {k: v for k, v in model.encode([(t,) for t in texts]).items()}
    results: list[dict[str, Any]] = []
    why = wrapper_unavailable() if use_wrapper else "--no-wrapper"
    with torch.no_grad():
        for size in batch_sizes:
            _score_chunks(model, {k: v[:size] for k, v in encoded.items()}, size, device)  # warm-up
            with EpochTimer(device) as timer:
                rows = _score_chunks(model, encoded, size, device)
            results.append({"mode": "forward", "score_batch": size, "texts": len(texts), "rows": rows,
                            "seconds": timer.seconds, "texts_per_s": len(texts) / timer.seconds})
            if why is None:
                from attacks.wrappers import SuiteModelWrapper

                SuiteModelWrapper(model, size)(texts[:size])  # warm-up
                wrapper = SuiteModelWrapper(model, size)
                with EpochTimer(device) as timer:
                    wrapper(texts)
                results.append({"mode": "wrapper", "score_batch": size, "texts": len(texts), "rows": wrapper.rows,
                                "seconds": timer.seconds, "texts_per_s": len(texts) / timer.seconds,
                                "forward_share": wrapper.seconds / timer.seconds})
            else:
                results.append({"mode": "wrapper", "score_batch": size, "skipped": why})
    return results


def _fmt(value: float | None, spec: str) -> str:
    return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def format_table(rows: Sequence[dict[str, Any]], steps_per_epoch: int, train_examples: int) -> str:
    head = (f"{'defense':16s} {'s/step':>8s} {'s/epoch':>9s} {'x finetune':>10s} {'x pgd':>6s} {'x base':>6s}"
            f" | {'T10 s':>6s} {'T10 x pgd':>9s} {'T10 x base':>10s}")
    lines = [f"epoch = {steps_per_epoch:,} steps (SST-2 train {train_examples:,} examples); "
             "T10 = adaptive_at Table 10, SST-2 (no fine-tune row)", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['defense']:16s} {r['s_per_step']:8.4f} {r['s_per_epoch']:9.1f} "
                     f"{_fmt(r['ratio_to_finetune'], '10.2f')} {_fmt(r['ratio_to_pgd'], '6.2f')} "
                     f"{_fmt(r['ratio_to_base'], '6.2f')} | {_fmt(r['table10_s'], '6.0f')} "
                     f"{_fmt(r['table10_ratio_to_pgd'], '9.2f')} {_fmt(r['table10_ratio_to_base'], '10.2f')}")
    return "\n".join(lines)


def format_scoring(results: Sequence[dict[str, Any]]) -> str:
    lines = ["attack engine model scoring (candidate texts/s):"]
    for r in results:
        if "skipped" in r:
            lines.append(f"  {r['mode']:8s} chunk {r['score_batch']:4d}: skipped ({r['skipped']})")
        else:
            share = f", forward {100 * r['forward_share']:.0f}%" if "forward_share" in r else ""
            lines.append(f"  {r['mode']:8s} chunk {r['score_batch']:4d}: {r['texts_per_s']:10.1f} texts/s "
                         f"({r['texts']} texts, {r['rows']} rows, {r['seconds']:.3f} s{share})")
    return "\n".join(lines)


def _why(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help=f"tiny config {TINY}, 3 steps, 64 scored texts (CPU smoke run)")
    p.add_argument("--config", type=Path, default=CONFIG, help="BERT config.json (default: the committed bert-base-uncased)")
    p.add_argument("--defenses", default=",".join(DEFENSE_NAMES), help="comma-separated defenses to time")
    p.add_argument("--steps", type=int, default=None, help="timed optimiser steps per defense (default 20; tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before (default 3; tiny 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=64, help="tokens per sentence, [CLS] and [SEP] included")
    p.add_argument("--adv-steps", type=int, default=5, help="k, perturbation.steps of every adversarial defense")
    p.add_argument("--train-examples", type=int, default=SST2_TRAIN, help="examples of the extrapolated epoch")
    p.add_argument("--score-texts", type=int, default=None, help="candidate texts scored (default 4096; tiny 64)")
    p.add_argument("--score-batch", default=None, help=f"chunk sizes, comma-separated (default {SCORE_BATCH},64)")
    p.add_argument("--no-wrapper", action="store_true", help="skip the SuiteModelWrapper measurement")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on CPU, as the profiles' cpu_threads; torch's own on CUDA)")
    p.add_argument("--nondeterministic", action="store_true", help="skip the suite's deterministic_mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    tiny = args.tiny
    args.steps = args.steps if args.steps is not None else (3 if tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    args.score_texts = args.score_texts if args.score_texts is not None else (64 if tiny else 4096)
    sizes = args.score_batch if args.score_batch is not None else (str(SCORE_BATCH) if tiny else f"{SCORE_BATCH},64")
    args.score_batch = [int(s) for s in sizes.split(",") if s.strip()]
    args.defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.adv_steps < 1 or min(args.score_batch, default=1) < 1:
        p.error("--steps, --batch-size, --adv-steps and --score-batch must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    import transformers
    from transformers import BertForSequenceClassification

    from defenses import DEFENSES
    from suite.data.registry import DATASETS
    from suite.run.protocol import resolve_device

    transformers.logging.set_verbosity_error()
    unknown = [d for d in args.defenses if d not in DEFENSES.names()]
    if unknown:
        print(f"gpu_check: unknown defense(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    config = load_config(args.config, args.tiny)
    if args.length > config.max_position_embeddings:
        print(f"gpu_check: --length {args.length} is longer than the config's max_position_embeddings "
              f"({config.max_position_embeddings})", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    hf_model = BertForSequenceClassification(config)  # built on CPU: the same weights on every device
    tokenizer = synthetic_tokenizer(config.vocab_size)
    examples = synthetic_examples(max(args.steps, args.warmup) * args.batch_size, args.length, config.vocab_size,
                                  args.seed)
    steps_per_epoch = math.ceil(args.train_examples / args.batch_size)
    sst2 = DATASETS.get("sst2")
    protocol_train = SST2_TRAIN - sst2.carve["default"].size(SST2_TRAIN)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"gpu_check: {device} {where}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{sum(p.numel() for p in hf_model.parameters()):,} parameters, batch {args.batch_size} x {args.length}, "
          f"k = {args.adv_steps}, {args.warmup} + {args.steps} steps per defense", flush=True)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}  # a failing part is reported and the others still run (one try on the GPU)
    scoring: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for name in args.defenses:
            try:
                row = time_defense(name, hf_model, tokenizer, examples, args, device)
            except Exception as exc:  # e.g. out of memory: keep the other defenses' figures
                errors[name] = _why(exc)
            if name in errors:  # outside the except block, so that its traceback (and model) can be freed
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                print(f"  {name:16s} failed: {errors[name]}", flush=True)
                continue
            rows.append(row)
            print(f"  {name:16s} {row['s_per_step'] * 1000:9.2f} ms/step", flush=True)
        if args.score_texts > 0:
            texts = synthetic_texts(args.score_texts, args.length, config.vocab_size, args.seed + 2)
            try:
                scoring = score_throughput(classifier(hf_model, tokenizer, args.length), texts, args.score_batch,
                                           device, not args.no_wrapper)
            except Exception as exc:
                errors["attack_scoring"] = _why(exc)
                print(f"  attack scoring failed: {errors['attack_scoring']}", flush=True)
        caught_messages = {str(w.message).splitlines()[0][:200] for w in caught}
    add_ratios(rows, steps_per_epoch, math.ceil(protocol_train / args.batch_size))
    print(format_table(rows, steps_per_epoch, args.train_examples))
    if scoring:
        print(format_scoring(scoring))
    result = {
        "settings": {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version(), "config": _shown(args.config), "tiny": args.tiny,
                     "parameters": sum(p.numel() for p in hf_model.parameters()),
                     "attn_implementation": getattr(config, "_attn_implementation", None),
                     "batch_size": args.batch_size, "length": args.length, "adv_steps": args.adv_steps,
                     "steps": args.steps, "warmup": args.warmup, "train_examples": args.train_examples,
                     "steps_per_epoch": steps_per_epoch, "suite_protocol_train": protocol_train,
                     "deterministic": not args.nondeterministic, "threads": torch.get_num_threads(),
                     "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "seed": args.seed},
        "rows": rows, "attack_scoring": scoring, "table10_sst2": TABLE10_SST2,
        "errors": errors, "warnings": sorted(caught_messages), "wall_seconds": time.perf_counter() - started,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"gpu_check: wrote {args.out}")
    print(f"gpu_check: done in {result['wall_seconds']:.1f} s" + (f"; failed: {', '.join(errors)}" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
