"""Run linkage benchmark pipelines one after the other and tabulate their test figures and wall times.

Each pipeline runs as ``engine run PIPELINE --no-track --metrics-out out/linkage/<name>.json`` in a subprocess
(the exact command is recorded); the table (markdown) and the rows (JSON) go to ``--out`` (default
``out/linkage/summary.{md,json}``). Data is read from ``$ENGINE_DATA_ROOT`` (default ``../shared/data``).

    .venv/bin/python benchmarks/linkage_benchmarks.py pipelines/linkage-febrl4.yaml pipelines/linkage-textual-abt-buy.yaml
    .venv/bin/python benchmarks/linkage_benchmarks.py --all          # every pipelines/linkage-*.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("f1", "precision", "recall", "pair_completeness", "reduction_ratio", "cluster_f1", "threshold",
           "best_epoch", "epochs")


def run_one(pipeline: Path, out_dir: Path, overrides: list[str]) -> dict:
    name = pipeline.stem
    metrics = out_dir / f"{name}.json"
    cmd = [str(ROOT / ".venv/bin/engine"), "run", str(pipeline), "--no-track", "--metrics-out", str(metrics)]
    for o in overrides:
        cmd += ["--set", o]
    tic = time.perf_counter()
    with open(out_dir / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    row = {"pipeline": name, "rc": rc, "wall_s": round(time.perf_counter() - tic, 1), "command": " ".join(cmd)}
    if rc == 0 and metrics.is_file():
        row.update({k: v for k, v in json.loads(metrics.read_text()).items() if k in COLUMNS + ("train_seconds",)})
    return row


def table(rows: list[dict]) -> str:
    head = ["pipeline", *COLUMNS, "train_seconds", "wall_s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for k in head:
            v = r.get(k, "–")
            cells.append(f"{v:.4f}" if isinstance(v, float) and k in COLUMNS else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every pipelines/linkage-*.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "linkage")
    args = parser.parse_args()
    pipelines = sorted((ROOT / "pipelines").glob("linkage-*.yaml")) if args.all else args.pipelines
    if not pipelines:
        parser.error("name pipelines or pass --all")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows = []
    for p in pipelines:
        rows.append(run_one(p.resolve(), args.out, args.overrides))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
        (args.out / "summary.md").write_text(table(rows))
    print(table(rows))
    sys.exit(0 if all(r["rc"] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
