#!/usr/bin/env bash
# Prepared GPU check (benchmarks/gpu_check.py): per-epoch time of finetune, pgd, freelb, tavat and their
# +adaptive versions (k = 5) on a random-init BERT-base, beside adaptive_at Table 10, and the attack
# engine's model-scoring throughput. Nothing is downloaded; capped at 5 minutes of wall clock.
#
#   benchmarks/gpu_check.sh --out "$OUT/gpu_check.json"   # full size (on the GPU machine: device tool)
#   benchmarks/gpu_check.sh --tiny                         # tiny config, a CPU smoke run in seconds
#
# Arguments go to gpu_check.py (--help lists them). Python: $GPU_CHECK_PYTHON, else the repository's
# .venv/bin/python, else python3 (the GPU machine's image: torch and transformers, no .venv).
# Exit status: gpu_check.py's; 3 when a needed package is missing; 124 when the 300 s cap is hit.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning,ignore::DeprecationWarning}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    py="$GPU_CHECK_PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then
    py="$repo/.venv/bin/python"
else
    py="$(command -v python3 || true)"
fi
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
    echo "gpu_check: no python found (set GPU_CHECK_PYTHON, or create $repo/.venv, or install python3)" >&2
    exit 3
fi

missing="$("$py" - <<'EOF' 2>/dev/null
import importlib.util
need = ["torch", "transformers", "tokenizers", "numpy", "scipy", "yaml", "safetensors", "tqdm"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)" || { echo "gpu_check: $py does not run" >&2; exit 3; }
if [ -n "$missing" ]; then
    echo "gpu_check: $py lacks $missing (needs torch, transformers, tokenizers, numpy, scipy, pyyaml, safetensors, tqdm)" >&2
    exit 3
fi

if command -v timeout >/dev/null 2>&1; then
    timeout 300 "$py" "$here/gpu_check.py" "$@"
else
    echo "gpu_check: no timeout command here; running without the 300 s cap" >&2
    "$py" "$here/gpu_check.py" "$@"
fi
rc=$?
if [ "$rc" -eq 124 ]; then
    echo "gpu_check: stopped at the 300 s cap (use fewer --steps / --score-texts)" >&2
fi
exit "$rc"
