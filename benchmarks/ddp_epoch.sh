#!/bin/bash
# Data-parallel epoch time on gowalla (BENCHMARKS.md, "Data-parallel training"): XSimGCL, global batch 2048, one
# epoch with 1 rank (torch's threads: all cores) then 2 ranks (cores split: 1 thread each on 2 cores), then the
# full test evaluation once on rank 0. Prints each run's epoch line, test line, wall and CPU time and peak RSS (of the
# largest process). ROUNDS=2 alternates 1, 2, 1, 2 ranks (fairer when other jobs share the machine).
#   [ROUNDS=1] benchmarks/ddp_epoch.sh [PIPELINE] [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-pipelines/xsimgcl-gowalla.yaml}
out=${2:-out/ddp_epoch}
mkdir -p "$out"
for round in $(seq "${ROUNDS:-1}"); do
for n in 1 2; do
  echo "=== round $round nproc $n start $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  /usr/bin/time -v .venv/bin/engine run "$pipeline" --nproc $n --set train.epochs=1 \
    --set evaluate.test_every=null --set train.checkpoint_dir="$out/ck$n" --no-track \
    --metrics-out "$out/metrics-$n.json" 2>&1 \
    | grep -E "^epoch|^test:|^best|Elapsed|User time|System time|Maximum resident|^Error"
  echo "=== round $round nproc $n end $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
done
done
