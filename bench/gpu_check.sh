#!/usr/bin/env bash
# One-GPU check of the CNN's fast path (bench/gpu_check.py): CPU-CUDA agreement, seconds
# per training / stacked-LOO step (eager and captured), projected wall time of the paper's
# protocol. From anywhere:
#
#   bash bench/gpu_check.sh                       # prints the tables
#   bash bench/gpu_check.sh --json results/gpu_check.json
#
# Exit status: 0 pass, 1 an agreement check failed, 2 no CUDA device (exits at once,
# nothing run), 124 it ran past GPU_CHECK_TIMEOUT seconds (default 360).
set -uo pipefail
cd "$(dirname "$0")/.."
exec timeout "${GPU_CHECK_TIMEOUT:-360}" "${PYTHON:-python3}" bench/gpu_check.py "$@"
