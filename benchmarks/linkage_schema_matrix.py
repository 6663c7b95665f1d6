"""Every DeepMatcher pipeline on every DeepMatcher set of its layout with ``data.fields`` omitted (issue #21).

A pipeline ``pipelines/linkage-{structured,textual,dirty}-*.yaml`` is run, one epoch, on each set of its layout
(``Structured``, ``Textual`` or ``Dirty``) in the folder of its source (``em-deepmatcher-csv`` for
``deepmatcher_csv``, ``em-deepmatcher-ditto`` for ``ditto_txt``), its own set included, as::

    engine run PIPELINE --no-track --set data.path=SET --set data.fields=null --set train.epochs=1 \\
        --set name=... --set model.matches_out=... --set train.checkpoint_dir=...

so the schema is inferred from the set's tables (the line ``engine: data.fields inferred: ...`` is recorded). Rows
whose model holds a transformer (a ``sentence`` encoder or a ``cross_encoder``; also ``model.cross_encoder.epochs=1``)
run on a subsample, so the matrix fits in an hour of one CPU core: at most ``--pairs`` pairs per split (a quarter of
them matches, in file order), records rebuilt from those pairs (no full tables, so no blocking figures). Each row:
pass/fail, wall time, the inferred schema and the 1-epoch test F1 (a smoke figure, not a benchmark one). The rows go
to ``--out``/results.jsonl as they finish (a rerun skips the rows already there) and the table to ``--out``/matrix.md.

    .venv/bin/python benchmarks/linkage_schema_matrix.py                 # the whole matrix
    .venv/bin/python benchmarks/linkage_schema_matrix.py --only walmart  # pipelines whose name holds 'walmart'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"structured": "Structured", "textual": "Textual", "dirty": "Dirty"}
FOLDERS = {"deepmatcher_csv": "em-deepmatcher-csv", "ditto_txt": "em-deepmatcher-ditto"}


def pipelines() -> list[Path]:
    return sorted(p for p in (ROOT / "pipelines").glob("linkage-*.yaml") if p.stem.split("-")[1] in LAYOUTS)


def uses_transformer(doc: dict) -> bool:
    model = doc.get("model") or {}
    specs = [s for v in (model.get("encoders") or {}).values() for s in (v if isinstance(v, list) else [v])]
    return model.get("cross_encoder") is not None or any(s.get("name") == "sentence" for s in specs)


def cases(data_root: Path) -> list[dict]:
    """``{pipeline, layout, set, path, subsample}`` for every pipeline x every set of its layout."""
    out = []
    for p in pipelines():
        doc = yaml.safe_load(p.read_text())
        layout = LAYOUTS[p.stem.split("-")[1]]
        folder = data_root / FOLDERS[doc["data"]["source"]] / layout
        for d in sorted(x for x in folder.iterdir() if x.is_dir()):
            out.append({"pipeline": p.stem, "layout": layout, "set": d.name, "path": str(d),
                        "source": doc["data"]["source"], "subsample": uses_transformer(doc),
                        "cross_encoder": (doc.get("model") or {}).get("cross_encoder") is not None})
    return out


def subsample(src: Path, dst: Path, pairs: int) -> Path:
    """``dst/{train,valid,test}.csv``: at most ``pairs`` pairs of each split of ``src`` (a quarter matches, in file
    order), without the tables (records are rebuilt from the pairs)."""
    import polars as pl

    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        f = src / f"{split}.csv" if (src / f"{split}.csv").is_file() else src / f"{split}.csv.gz"
        df = pl.read_csv(f, infer_schema=False)
        pos = df.filter(pl.col("label") == "1").head(pairs // 4)
        neg = df.filter(pl.col("label") != "1").head(pairs - pos.height)
        pl.concat([pos, neg]).write_csv(dst / f"{split}.csv")
    return dst


def case_args(case: dict, out: Path, pairs: int) -> list[str]:
    """The ``engine`` arguments of one row (``run PIPELINE --no-track ...``); the subsample is written here."""
    key = f"{case['pipeline']}--{case['set']}"
    path = Path(case["path"])
    if case["subsample"]:
        path = subsample(path, out / "subsets" / f"{case['layout']}-{case['set']}-{pairs}", pairs)
    args = ["run", str(ROOT / "pipelines" / f"{case['pipeline']}.yaml"), "--no-track",
            "--metrics-out", str(out / f"{key}.json"), "--set", f"data.path={path}", "--set", "data.fields=null",
            "--set", "train.epochs=1", "--set", f"name=schema-matrix-{key}",
            "--set", f"model.matches_out={out / 'matches' / key}.parquet",
            "--set", f"train.checkpoint_dir={out / 'checkpoints'}"]
    if case["cross_encoder"]:
        args += ["--set", "model.cross_encoder.epochs=1"]
    return args


def run_case(case: dict, out: Path, pairs: int, engine: str) -> dict:
    key = f"{case['pipeline']}--{case['set']}"
    metrics = out / f"{key}.json"
    metrics.unlink(missing_ok=True)
    cmd = [engine, *case_args(case, out, pairs)]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    (out / f"{key}.log").write_text(proc.stdout + proc.stderr)
    inferred = re.search(r"^engine: data\.fields inferred: (.*)$", proc.stderr, re.M)
    row = {**case, "rc": proc.returncode, "ok": proc.returncode == 0 and metrics.is_file(),
           "wall_s": round(wall, 1), "schema": inferred.group(1) if inferred else None,
           "command": " ".join(cmd)}
    if row["ok"]:
        m = json.loads(metrics.read_text())
        row.update({"f1": m.get("f1"), "train_seconds": m.get("train_seconds")})
    else:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        row["error"] = tail[:300]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| pipeline | set | rows | result | wall s | 1-epoch test F1 | inferred schema |",
             "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        f1 = f"{r['f1']:.4f}" if r.get("f1") is not None else "–"
        what = "pass" if r["ok"] else f"FAIL ({r.get('error', '')})"
        sample = "subsample" if r["subsample"] else "full"
        lines.append(f"| {r['pipeline']} | {r['layout']}/{r['set']} | {sample} | {what} | {r['wall_s']:.1f} | {f1} | "
                     f"{r['schema'] or '–'} |")
    ok = sum(r["ok"] for r in rows)
    lines.append("")
    lines.append(f"{ok} of {len(rows)} runs passed; {sum(r['wall_s'] for r in rows) / 60:.1f} min in all.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("ENGINE_DATA_ROOT", str(ROOT.parent / "shared/data")))
    parser.add_argument("--out", default=str(ROOT / "out/schema-matrix"))
    parser.add_argument("--engine", default=str(ROOT / ".venv/bin/engine") if (ROOT / ".venv/bin/engine").is_file()
                        else "engine", help="the engine command")
    parser.add_argument("--only", default=None, help="only pipelines whose name contains this")
    parser.add_argument("--pairs", type=int, default=400, help="pairs per split of the transformer rows' subsample")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases(Path(args.data_root).resolve()) if args.only is None or args.only in c["pipeline"]]
    todo.sort(key=lambda c: c["subsample"])  # the cheap full-data rows first
    results = out / "results.jsonl"
    done = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["pipeline"], r["layout"], r["set"])] = r
    for i, case in enumerate(todo, 1):
        k = (case["pipeline"], case["layout"], case["set"])
        if k in done:
            continue
        row = run_case(case, out, args.pairs, args.engine)
        done[k] = row
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(todo)}] {case['pipeline']} on {case['layout']}/{case['set']}: "
              f"{'pass' if row['ok'] else 'FAIL'} {row['wall_s']}s {row.get('error', '')}", file=sys.stderr, flush=True)
    rows = [done[(c["pipeline"], c["layout"], c["set"])] for c in sorted(todo, key=lambda c: (c["pipeline"], c["set"]))]
    md = table(rows)
    (out / "matrix.md").write_text(md + "\n")
    print(md)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
