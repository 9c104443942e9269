#!/usr/bin/env bash
# One prepared GPU check (bench/gpu_check.py): GPU tests, 3B-shape merges vs mergekit --cuda, 8B-shape LoRA and
# full training steps, a 3B search candidate, and generation (transformers; vLLM if it imports). Fits in ~8 min on
# an H100 and writes bench/RESULTS.md's GPU-check section (a copy, gpu_check.md and gpu_check.json in --out / $OUT).
#
#   bash bench/gpu_check.sh                           # on the GPU machine
#   bash bench/gpu_check.sh --dry-run --out /tmp/gc   # the same end to end on the CPU with tiny shapes
#   bash bench/gpu_check.sh --only tests,build,merge  # some parts only (see --help)
#
# Python: $PYTHON, else this checkout's .venv, else python3 (the GPU image's torch). Wheels in .whl/ (carried to the
# GPU machine for packages its image lacks: pydantic, trl, mergekit, ...) are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" || echo "gpu_check: installing .whl/ failed" >&2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # safemerge from this tree, installed or not
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
