"""Every DeepMatcher set's pipeline beside the untrained TF-IDF baselines of that set (issue #19).

For each set its pipeline (``--pipelines``, default: the one pipeline per set, :data:`SETS`) is run as committed::

    engine run PIPELINE --no-track --metrics-out OUT/runs/NAME.json --set name=NAME \\
        --set model.matches_out=OUT/runs/NAME.parquet --set train.checkpoint_dir=OUT/checkpoints [--set ...]

and its test F1 is put beside the TF-IDF cosine baselines (word and char, idf on both tables, threshold of max F1 on
valid: ``linkage_tfidf_baseline.baseline``, same splits). Each row: test F1 / P / R, the classifier's valid F1,
what scored the pairs (the classifier, or the TF-IDF cosine ``rerank.tfidf_fallback`` chose on valid), best epoch,
pair completeness, wall seconds, and whether it is at or above both baselines. The rows go to ``OUT/results.jsonl`` as
they finish (a rerun skips the rows already there) and the table to ``OUT/matrix.md``.

    ENGINE_DATA_ROOT=../shared/data .venv/bin/python benchmarks/linkage_features_matrix.py
    ENGINE_DATA_ROOT=../shared/data .venv/bin/python benchmarks/linkage_features_matrix.py --only abt --seed 2021
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
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from linkage_tfidf_baseline import SETS  # noqa: E402  (one pipeline per DeepMatcher set)


def baselines(pipeline: Path) -> dict[str, float]:
    from linkage_tfidf_baseline import baseline, load

    _, data = load(pipeline)
    return {a: baseline(data, a, "tables")["f1"] for a in ("word", "char")}


def run(pipeline: Path, out: Path, seed: int | None, extra: list[str], engine: str) -> dict:
    name = f"{pipeline.stem}-matrix" + (f"-s{seed}" if seed is not None else "")
    metrics = out / "runs" / f"{name}.json"
    args = [engine, "run", str(pipeline), "--no-track", "--metrics-out", str(metrics), "--set", f"name={name}",
            "--set", f"model.matches_out={out / 'runs' / (name + '.parquet')}",
            "--set", f"train.checkpoint_dir={out / 'checkpoints'}"]
    if seed is not None:
        args += ["--set", f"seed={seed}"]
    for s in extra:
        args += ["--set", s]
    tic = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        return {"ok": False, "wall_s": wall, "error": proc.stderr[-2000:]}
    m = json.loads(metrics.read_text())
    keys = ("f1", "precision", "recall", "best_epoch", "epochs", "pair_completeness", "valid_f1_classifier",
            "scored_by_tfidf")
    return {"ok": True, "wall_s": wall, **{k: m.get(k) for k in keys}}


def table(rows: list[dict]) -> str:
    head = ("| set | pipeline | seed | test F1 | P | R | classifier valid F1 | scored by | best epoch / run | "
            "pair completeness | wall s | TF-IDF word | TF-IDF char | ≥ both |\n"
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['set']} | {r['pipeline']} | {r['seed']} | failed | | | | | | | {r['wall_s']:.0f} | "
                         f"{r['word']:.4f} | {r['char']:.4f} | no |")
            continue
        fmt = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
        ok = r["f1"] >= max(r["word"], r["char"]) - 1e-12
        lines.append(f"| {r['set']} | {r['pipeline']} | {r['seed']} | **{r['f1']:.4f}** | {fmt(r['precision'])} | "
                     f"{fmt(r['recall'])} | {fmt(r['valid_f1_classifier'])} | "
                     f"{'TF-IDF (fallback)' if r.get('scored_by_tfidf') else 'classifier'} | "
                     f"{r['best_epoch']} / {r['epochs']} | "
                     f"{fmt(r['pair_completeness'])} | {r['wall_s']:.0f} | {r['word']:.4f} | {r['char']:.4f} | "
                     f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="*", type=Path, help="default: pipelines/linkage-<set>.yaml of every set")
    parser.add_argument("--only", default=None, help="run the pipelines whose name holds this")
    parser.add_argument("--seed", type=int, default=None, help="--set seed=SEED (default: the pipeline's)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more --set KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "linkage" / "features-matrix")
    parser.add_argument("--engine", default=str(Path(sys.executable).with_name("engine")))
    args = parser.parse_args()
    os.environ.setdefault("ENGINE_DATA_ROOT", str(ROOT.parent / "shared" / "data"))
    paths = args.pipelines or [ROOT / "pipelines" / f"linkage-{s}.yaml" for s in SETS]
    paths = [p for p in paths if args.only is None or args.only in p.stem]
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    key = lambda r: (r["pipeline"], r["seed"], tuple(r["extra"]))  # noqa: E731
    seen = {key(r) for r in done}
    for p in paths:
        row = {"pipeline": p.stem, "set": p.stem.removeprefix("linkage-"), "seed": args.seed, "extra": args.extra}
        if key(row) in seen:
            continue
        row.update(baselines(p))
        row.update(run(p, args.out, args.seed, args.extra, args.engine))
        print(json.dumps(row), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
    (args.out / "matrix.md").write_text(table(done))
    print(table(done))
    return 0 if all(r["ok"] for r in done) else 1


if __name__ == "__main__":
    raise SystemExit(main())
