#!/usr/bin/env bash
# GPU checks of wensu in one run (experiments/gpu/README.md has the device-tool invocation).
#   experiments/gpu/run_checks.sh                 # on the GPU machine: results in $OUT
#   experiments/gpu/run_checks.sh --dry-run       # tiny sizes on the CPU
# Extra arguments go to checks.py (--stages, --budget, --carry, --device, --out).
# Wheels in gpu_carry/wheels are installed to /tmp/wensu_site when hydra is missing (the GPU
# image has torch, lightning, transformers, h5py, einops and scikit-learn, not hydra/omegaconf/
# biopython); wensu itself runs from this tree (PYTHONPATH).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
CARRY="$REPO/gpu_carry"
args=("$@")
export OUT="${OUT:-${TMPDIR:-/tmp}/wensu_gpu_checks}"
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --carry) CARRY="${args[$((i + 1))]}" ;;
    --out) OUT="${args[$((i + 1))]}" ;;
  esac
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export WENSU_GPU_CHECKS_COMMAND="experiments/gpu/run_checks.sh $*"
if ! "$PYTHON" -c "import hydra, omegaconf, Bio" 2>/dev/null; then
  if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/wensu_site "$CARRY"/wheels/*.whl || { echo "wheel install failed" >&2; exit 3; }
    export PYTHONPATH="$PYTHONPATH:/tmp/wensu_site"
  else
    echo "error: hydra/omegaconf/biopython missing and no wheels in $CARRY/wheels" \
      "(run experiments/gpu/prepare_carry.sh)" >&2
    exit 3
  fi
fi
mkdir -p "$OUT"
"$PYTHON" -P experiments/gpu/checks.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_checks.log"
