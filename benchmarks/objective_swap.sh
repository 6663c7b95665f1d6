#!/usr/bin/env bash
# Objective swap (issue #5): the graph and sequential pipelines switch their contrastive objective from the command
# line alone (`--set model.contrast.objective={...}`, a YAML flow mapping that replaces the whole block), on one data
# set (MovieLens-100K) with one fixed budget per family. One run at a time, one thread.
#
#   benchmarks/objective_swap.sh                  # every run, then the table
#   FAMILIES=graph benchmarks/objective_swap.sh   # one family
#   ONLY="infonce siglip" benchmarks/objective_swap.sh
#   TABLE_ONLY=1 benchmarks/objective_swap.sh     # rebuild the table from what is in out/objective_swap/
#   EXTRAS=0 benchmarks/objective_swap.sh         # skip cwcl / mochi / queue_infonce
#
# Each run writes out/objective_swap/<family>-<objective>.json (--metrics-out) and .log; a run whose .json exists is
# skipped unless FORCE=1. The table goes to out/objective_swap.md (and stdout).
set -u
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-.venv/bin/engine}
PY=${PY:-.venv/bin/python}
OUT=out/objective_swap
FAMILIES=${FAMILIES:-"graph seq"}
ONLY=${ONLY:-}
FORCE=${FORCE:-0}
EXTRAS=${EXTRAS:-1}
TABLE_ONLY=${TABLE_ONLY:-0}
DATA_ROOT=${ENGINE_DATA_ROOT:-../shared/data}
mkdir -p "$OUT/data"

# family|label|objective block (YAML flow mapping given to --set model.contrast.objective=...)
# graph: lambda = 0.2 (XSimGCL); seq: lambda = 0.1 (CL4SRec). Options not written keep the objective's defaults.
G_INFONCE='{name: infonce, temperature: 0.15}'
S_INFONCE='{name: infonce, temperature: 1.0, normalize: false, intra_view_negatives: true}'
RUNS=(
  "graph|none|{name: infonce, temperature: 0.15, weight: 0.0}"
  "graph|infonce|{name: infonce, temperature: 0.15, weight: 0.2}"
  "graph|tiled_infonce|{name: tiled_infonce, temperature: 0.15, weight: 0.2}"
  "graph|dcl|{name: dcl, weight: 0.2}"
  "graph|siglip|{name: siglip, weight: 0.2}"
  "graph|hard_negative_infonce|{name: hard_negative_infonce, weight: 0.2}"
  "graph|debiased_infonce|{name: debiased_infonce, weight: 0.2}"
  "graph|align_uniform|{name: align_uniform, weight: 0.2}"
  "graph|supcon|{name: supcon, weight: 0.2}"
  "graph|auc|{name: auc, weight: 0.2}"
  "graph|weighted_sum|{name: weighted_sum, weight: 0.2, terms: [${G_INFONCE}, {name: align_uniform, weight: 0.5, align_weight: 0.0}]}"
  "graph|symile|{name: symile, weight: 0.2}"
  "graph|gram|{name: gram, weight: 0.2}"
  "graph|bpr|{name: bpr, weight: 0.2}"
  "seq|none|{name: infonce, temperature: 1.0, normalize: false, intra_view_negatives: true, weight: 0.0}"
  "seq|infonce|{name: infonce, temperature: 1.0, normalize: false, intra_view_negatives: true, weight: 0.1}"
  "seq|tiled_infonce|{name: tiled_infonce, temperature: 1.0, normalize: false, weight: 0.1}"
  "seq|dcl|{name: dcl, weight: 0.1}"
  "seq|siglip|{name: siglip, weight: 0.1}"
  "seq|hard_negative_infonce|{name: hard_negative_infonce, weight: 0.1}"
  "seq|debiased_infonce|{name: debiased_infonce, weight: 0.1}"
  "seq|align_uniform|{name: align_uniform, weight: 0.1}"
  "seq|supcon|{name: supcon, weight: 0.1}"
  "seq|auc|{name: auc, weight: 0.1}"
  "seq|weighted_sum|{name: weighted_sum, weight: 0.1, terms: [${S_INFONCE}, {name: align_uniform, weight: 0.5, align_weight: 0.0}]}"
  "seq|symile|{name: symile, weight: 0.1}"
  "seq|gram|{name: gram, weight: 0.1}"
  "seq|bpr|{name: bpr, weight: 0.1}"
)
if [ "$EXTRAS" = 1 ]; then
  RUNS+=(
    "graph|cwcl|{name: cwcl, weight: 0.2}"
    "graph|mochi|{name: mochi, weight: 0.2}"
    "graph|queue_infonce|{name: queue_infonce, weight: 0.2}"
    "seq|cwcl|{name: cwcl, weight: 0.1}"
    "seq|mochi|{name: mochi, weight: 0.1}"
    "seq|queue_infonce|{name: queue_infonce, weight: 0.1}"
  )
fi

printf '%s\n' "${RUNS[@]}" > "$OUT/runs.txt"

if [ "$TABLE_ONLY" != 1 ]; then
  for run in "${RUNS[@]}"; do
    IFS='|' read -r family label objective <<< "$run"
    case " $FAMILIES " in *" $family "*) ;; *) continue ;; esac
    if [ -n "$ONLY" ]; then case " $ONLY " in *" $label "*) ;; *) continue ;; esac; fi
    stem="$OUT/$family-$label"
    if [ "$FORCE" != 1 ] && [ -f "$stem.json" ]; then echo "skip $family-$label (done)"; continue; fi
    rm -f "$stem.json" "$stem.err"
    pipeline="pipelines/objectives-ml100k-$family.yaml"
    echo "$(date -u +%H:%M:%S) run $family-$label: $objective"
    start=$(date +%s.%N)
    "$ENGINE" run "$pipeline" --no-track \
      --set train.num_threads=1 \
      --set "model.contrast.objective=$objective" \
      --metrics-out "$stem.json" > "$stem.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    wall=$(echo "$end - $start" | bc)
    echo "$wall" > "$stem.wall"
    if [ $rc -ne 0 ]; then
      # the one-line error the CLI prints, else the last line of the traceback
      { grep -E '^(Error|[A-Za-z_.]*(Error|Exception)):' "$stem.log" | tail -1; } > "$stem.err"
      [ -s "$stem.err" ] || tail -1 "$stem.log" > "$stem.err"
      echo "   failed (rc $rc, ${wall}s): $(cat "$stem.err")"
    else
      echo "   done in ${wall}s: $(tail -2 "$stem.log" | head -1)"
    fi
  done
fi

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
runs = [line.split("|", 2) for line in (out / "runs.txt").read_text().splitlines() if line]
cols = {"graph": ["recall@20", "ndcg@20"], "seq": ["hr@10", "ndcg@10", "hr@20", "ndcg@20"]}
main = {"graph": "ndcg@20", "seq": "ndcg@10"}
names = {"graph": "graph (XSimGCL)", "seq": "seq (CL4SRec)"}
all_cols = ["recall@20", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]
header = ("| family | objective | --set model.contrast.objective= | Recall@20 | HR@10 | NDCG@10 | HR@20 | NDCG@20 "
          "| Δ main vs none | best epoch | train s | wall s |")
lines = [header, "|" + "---|" * 12]
base = {}
for family, label, obj in runs:
    p = out / f"{family}-{label}.json"
    if label == "none" and p.exists():
        base[family] = json.loads(p.read_text())[main[family]]
for family, label, obj in runs:
    stem = out / f"{family}-{label}"
    wall = stem.with_suffix(".wall")
    wall_s = f"{float(wall.read_text()):.0f}" if wall.exists() else "–"
    ob = "`" + obj.replace("|", "\\|") + "`"
    if stem.with_suffix(".json").exists():
        m = json.loads(stem.with_suffix(".json").read_text())
        vals = []
        for c in all_cols:
            vals.append(f"{m[c]:.4f}" if c in cols[family] and c in m else "–")
        d = f"{m[main[family]] - base[family]:+.4f} ({main[family]})" if family in base and label != "none" else "–"
        lines.append(f"| {names[family]} | {label} | {ob} | " + " | ".join(vals)
                     + f" | {d} | {m.get('best_epoch', '–')} | {m.get('train_seconds', 0):.0f} | {wall_s} |")
    elif stem.with_suffix(".err").exists():
        err = stem.with_suffix(".err").read_text().strip().replace("|", "\\|")
        lines.append(f"| {names[family]} | {label} | {ob} | not applicable: `{err}` | | | | | | | | {wall_s} |")
    else:
        lines.append(f"| {names[family]} | {label} | {ob} | not run | | | | | | | | |")
notes = """
Setup (same budget within a family; only `model.contrast.objective` changes between rows, by `--set`):

- graph: `pipelines/objectives-ml100k-graph.yaml`, XSimGCL (LightGCN D 64, 3 layers, embedding noise eps 0.2 on the
  main pass, final layer contrasted with layer 1, users and items apart), BPR + 1e-4 L2, lambda = 0.2 for every
  objective. ml-100k (`recbole_atomic`, all ratings as interactions), per-user random 80/10/10 split (seed 2020).
  30 epochs, batch 2048, Adam lr 0.005, no early stopping; valid every 5 epochs, the best valid NDCG@20 checkpoint
  is tested. Full ranking over all 1,682 items, train (+ valid) items masked.
- seq: `pipelines/objectives-ml100k-seq.yaml`, CL4SRec (SASRec D 64, 2 blocks, 2 heads, dropout 0.5, max_len 50, CE
  over all items, random crop/mask/reorder views, contrast on the last hidden state), lambda = 0.1 for every
  objective. ml-100k as time-ordered sequences (`interaction_sequences`), leave-one-out. 15 epochs, batch 64, Adam
  lr 0.001, no early stopping; valid every 3 epochs, the best valid NDCG@10 checkpoint is tested. Ranking against
  all items, history masked.
- `none`: the same pipeline with the contrastive weight set to 0 (views still computed, noisy/augmented passes kept),
  so it costs the same and differs only by the contrastive term.
- "Δ main vs none": NDCG@20 (graph) or NDCG@10 (seq) minus the `none` row of the family.
- Options not written in the `--set` value are the objective's defaults: infonce / tiled_infonce tau 0.2 (the
  rows set the family's published tau: 0.15 graph; 1.0 unnormalised with NT-Xent intra-view negatives seq, and
  tiled_infonce has no intra-view option), normalize true; dcl tau 0.1, normalize true; siglip tau 0.1 and bias -10,
  both learnable (learnable: true), normalize true; hard_negative_infonce tau 0.5, beta 1.0, tau_plus 0.1;
  debiased_infonce tau 0.5, tau_plus 0.1; align_uniform alpha 2, t 2, align and uniform weights 1; supcon tau 0.1,
  normalize true, label-free (anchor, positive) form = NT-Xent over both views; auc logistic surrogate, tau 1,
  in-batch negatives, dot products (normalize false); weighted_sum = the family's infonce + 0.5 x uniformity
  (align_uniform with align_weight 0); cwcl tau 0.1, weights from the anchor view; mochi tau 0.2, 64 hard, 32 mixed,
  16 query-mixed negatives; queue_infonce queue 4,096, tau 0.2, in-batch negatives too.
- symile, gram (a list of modalities) and bpr (user, positive, negative triple) do not take the (anchor, positive)
  pair both tasks call the objective with; the pipeline validates, and the run fails at its first training step
  with the error shown (a raw Python traceback, not a one-line config error).
- "train s" is the trainer's train time (train_seconds); "wall s" is the whole command (data, evaluation, test).
  The 2-core machine was shared with other training jobs (load average ~5), so times are only roughly comparable.
"""
text = "\n".join(lines) + "\n" + notes
(out.parent / "objective_swap.md").write_text(text)
print(text)
EOF
