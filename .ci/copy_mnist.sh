#!/usr/bin/env bash
# Copy the four canonical MNIST .gz files from ../shared/data/MNIST/raw/ (relative to the
# repository root's parent) to resources/mnist/MNIST/raw/, where the workflow (mnist_root:
# resources/mnist) and the real-MNIST tests read them. Fails, naming what is missing, if
# any file is absent. Run from anywhere; works on the repository this script is in.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$(dirname "$root")/shared/data/MNIST/raw"
dst="$root/resources/mnist/MNIST/raw"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=()
for f in "${files[@]}"; do
    [[ -f "$src/$f" ]] || missing+=("$f")
done
if (( ${#missing[@]} )); then
    echo "ERROR: MNIST files missing in $src: ${missing[*]}" >&2
    echo "CI runs the real-MNIST tier: put the four canonical .gz files in ../shared/data/MNIST/raw/" >&2
    exit 1
fi
mkdir -p "$dst"
for f in "${files[@]}"; do
    cp "$src/$f" "$dst/$f"
done
echo "copied ${#files[@]} MNIST files from $src to $dst"
