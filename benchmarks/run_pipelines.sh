#!/usr/bin/env bash
# Run benchmark pipelines one after another, each writing out/bench/<label>.json (test metrics + run_id) and a log.
#   benchmarks/run_pipelines.sh LABEL_SUFFIX "OVERRIDES" pipelines/a.yaml pipelines/b.yaml ...
# Example (what BENCHMARKS.md ran on the 2-core CPU):
#   benchmarks/run_pipelines.sh b8192 "--set train.batch_size=8192 --set train.lr=0.004 --set train.epochs=8" \
#       pipelines/lightgcn-gowalla.yaml pipelines/xsimgcl-gowalla.yaml
set -uo pipefail
cd "$(dirname "$0")/.."
suffix=$1; overrides=$2; shift 2
mkdir -p out/bench
for pipeline in "$@"; do
  label=$(basename "$pipeline" .yaml)-$suffix
  start=$(date +%s)
  # shellcheck disable=SC2086
  .venv/bin/engine run "$pipeline" $overrides --set name="$label" --metrics-out "out/bench/$label.json" \
      > "out/bench/$label.log" 2>&1
  echo "$label exit=$? wall=$(( $(date +%s) - start ))s" | tee -a out/bench/summary.txt
done
