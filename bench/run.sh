#!/usr/bin/env bash
# Run the speed benchmarks (GitHub issue 4) and print their tables.
#
#   bash bench/run.sh                      # from the repo root
#   DATA_ROOT=resources/mnist THREADS=2 K=500 K_SKLEARN=5 bash bench/run.sh   # (the defaults)
#
# Creates bench/.venv (python -m venv --system-site-packages, plus bench/requirements.txt:
# dattri) if missing, checks that installing it left torch alone, then runs
# bench/bench_influence.py and bench/bench_loo.py. JSON results go to $OUT_DIR
# (results/bench by default), logs to $OUT_DIR/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DATA_ROOT=${DATA_ROOT:-resources/mnist}
THREADS=${THREADS:-2}
K=${K:-500}
K_SKLEARN=${K_SKLEARN:-5}
OUT_DIR=${OUT_DIR:-results/bench}
VENV=bench/.venv
mkdir -p "$OUT_DIR"

torch_before=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.__file__)')
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV (system site packages) ..."
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install --quiet -r bench/requirements.txt
fi
torch_venv=$("$VENV/bin/python" -c 'import torch; print(torch.__version__, torch.__file__)')
if [ "$torch_before" != "$torch_venv" ]; then
    echo "bench/.venv sees a different torch than $PYTHON:" >&2
    echo "  $PYTHON: $torch_before" >&2
    echo "  venv:    $torch_venv" >&2
    echo "remove bench/.venv and check bench/requirements.txt" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import dattri, sklearn; print("dattri", dattri.__file__, "| sklearn", sklearn.__version__)'

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
export TQDM_DISABLE=1

common=(--data-root "$DATA_ROOT" --work-dir "$OUT_DIR" --threads "$THREADS")

echo "== bench_influence (log: $OUT_DIR/influence.log)"
"$VENV/bin/python" bench/bench_influence.py "${common[@]}" --out "$OUT_DIR/bench-influence.json" \
    2>&1 | tee "$OUT_DIR/influence.log"

echo "== bench_loo (log: $OUT_DIR/loo.log)"
"$VENV/bin/python" bench/bench_loo.py "${common[@]}" --k "$K" --k-sklearn "$K_SKLEARN" \
    --out "$OUT_DIR/bench-loo.json" 2>&1 | tee "$OUT_DIR/loo.log"

echo
echo "== tables"
sed -n '/^Influence of all/,/^goals:/p' "$OUT_DIR/influence.log"
echo
sed -n '/^Seconds per certified LOO point/,/^goals:/p' "$OUT_DIR/loo.log"
