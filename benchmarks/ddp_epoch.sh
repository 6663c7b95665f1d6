#!/bin/bash
# Data-parallel epoch time on gowalla (BENCHMARKS.md, "Data-parallel training"): XSimGCL, global batch 2048, one
# epoch with 1 rank (torch's threads: all cores) then 2 ranks (cores split: 1 thread each on 2 cores), then the
# full test evaluation once on rank 0. Prints each run's epoch line, test line, wall time and peak RSS.
#   benchmarks/ddp_epoch.sh [PIPELINE] [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-pipelines/xsimgcl-gowalla.yaml}
out=${2:-out/ddp_epoch}
mkdir -p "$out"
for n in 1 2; do
  echo "=== nproc $n start $(date -u +%T)"
  /usr/bin/time -v .venv/bin/engine run "$pipeline" --nproc $n --set train.epochs=1 \
    --set evaluate.test_every=null --set train.checkpoint_dir="$out/ck$n" --no-track \
    --metrics-out "$out/metrics-$n.json" 2>&1 | grep -E "^epoch|^test:|^best|Elapsed|Maximum resident|^Error"
  echo "=== nproc $n end $(date -u +%T)"
done
