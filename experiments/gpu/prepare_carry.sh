#!/usr/bin/env bash
# Build gpu_carry/ (proteome shards, probe files, wheels) for experiments/gpu/run_checks.sh.
#   experiments/gpu/prepare_carry.sh                    # real carry, here (needs PyPI for wheels)
#   experiments/gpu/prepare_carry.sh --dry-run --carry /tmp/carry
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
export WENSU_SHARED_DATA="${WENSU_SHARED_DATA:-$REPO/../shared/data}"
exec "$PYTHON" -P "$REPO/experiments/gpu/prepare_carry.py" "$@"
