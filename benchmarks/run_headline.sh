#!/usr/bin/env bash
# The `headline` grid seed by seed, so that whole seeds finish first (a per-task claim needs all ten,
# but a sitting that ends midway leaves complete seeds, not ten half-seeds). Resumable: each call of
# the sweep skips finished runs and continues a stopped one from its checkpoint.
#   bash benchmarks/run_headline.sh [JOBS]        # from the repository root, in the benchmark venv
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${1:-2}"
for seed in 1 2 3 4 5 6 7 8 9 10; do
    python -m benchmarks.sweep --protocol headline --seeds "$seed" --jobs "$jobs"
done
