"""The linkage scale benchmark (``benchmarks/linkage_scale.py``) with its featurise, embed, block and re-rank phases
run as Ray tasks over shards, on a local cluster (127.0.0.1) or an existing one; the same candidates and scores.

The driver generates the records and does the global steps: ``dedupe`` (each field's codes into its sorted distinct
values), ``train`` (the small model, on the featurised train records gathered from the featurise shards), ``index``
(the IVF quantiser trained on a sample of the record vectors, then every vector added: once), ``pairs`` (the
candidates of every shard kept once as unordered pairs), ``rerank_train`` (the pair classifier, on the labelled
candidates) and ``evaluate``. The tasks (one CPU and one thread each):

- ``featurize``: shards of each field's distinct values (``--value-shard``, a multiple of 4096): hashed n-gram ids;
- ``embed``: the field vectors of those shards (each distinct value once, 4096 at a time as the single process), then
  record shards (``--shard``) gathered and fused into unit record vectors, 8192 at a time;
- ``block``: record shards searched against the shared index, ``--chunk`` at a time (their candidate keys);
- ``rerank``: shards of the candidate pairs (``--pair-shard``) scored by the shared classifier, each re-gathering
  the field vectors of the records its pairs touch from the shared tables (no ``[N, F, D]`` table anywhere).

Shared once in the object store (``ray.put``, numpy read zero-copy by the tasks): the model, the codes with the field
vectors, the record vectors, the serialised index, the candidate pairs, the classifier. Shards are aligned with the
single process's chunks, so every number is the same (``--compare`` runs the single process after and checks it).

    .venv/bin/python benchmarks/linkage_scale_ray.py --records 100000 --workers 2 --compare
    .venv/bin/python benchmarks/linkage_scale_ray.py --records 1000000 --workers 2
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "serving"))
import linkage_scale as ls  # noqa: E402
from ivf_pairs import build_ivf, scores_of, search_pairs, sorted_unique  # noqa: E402
from phases import START, Phases, peak_gb, release_free_memory  # noqa: E402
from rerank_pairs import reranker_rows, score_pairs, train_reranker  # noqa: E402

_CACHE: dict = {}  # per worker process: the deserialised index and the text encoder, by key


def _stat(tic: float, cpu: float, rows: int, **extra) -> dict:
    release_free_memory()
    return {"pid": os.getpid(), "start": tic, "end": time.time(), "cpu_s": time.process_time() - cpu, "rows": rows,
            "maxrss_gb": round(peak_gb(), 3), **extra}


def warmup_task():
    """Imports what the tasks use (torch, faiss, engine_linkage), so that no phase's first task pays for them."""
    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    import engine_linkage.char_ngram  # noqa: F401
    import engine_linkage.model  # noqa: F401

    time.sleep(1.0)  # long enough that every worker takes one
    return None, _stat(tic, cpu, 0)


def featurize_task(args, values):
    """Hashed n-gram ids ``int64 [u, L]`` of a shard of a field's distinct values (a polars Series)."""
    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    if "text" not in _CACHE:
        _CACHE["text"] = ls.make_text_encoder(args)  # featurize reads only the encoder's options
    ids = _CACHE["text"].featurize(values.to_list())
    return ids, _stat(tic, cpu, len(values), width=int(ids.shape[1]))


def field_vectors_task(model, field: str, ids, width: int):
    """Unit field vectors ``float32 [u, D]`` and presence ``bool [u]`` of a featurised shard, 0-padded to ``width``."""
    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])))
    vecs, present = ls.field_vectors(model, [field], {field: ids}, 4096)
    return (vecs[field].numpy(), present[field].numpy()), _stat(tic, cpu, ids.shape[0])


def _torch_fields(shared):
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # read, never written
    return ({f: torch.from_numpy(v) for f, v in shared["vecs"].items()},
            {f: torch.from_numpy(m) for f, m in shared["present"].items()})


def fuse_task(model, shared, start: int, stop: int):
    """Unit record vectors ``float32 [stop - start, D]`` of a record shard (as ``linkage_scale.embed``)."""
    import torch

    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    vecs, present = _torch_fields(shared)
    codes = {f: c[start:stop] for f, c in shared["codes"].items()}
    out = np.empty((stop - start, model.dim), np.float32)
    with torch.no_grad():
        for i in range(0, stop - start, 8192):
            v, m = ls.gather_fields(vecs, present, codes, list(codes), np.arange(i, min(stop - start, i + 8192)))
            out[i:i + 8192] = model.fuse(v, m).numpy()
    return out, _stat(tic, cpu, stop - start)


def block_task(index_box, x, start: int, stop: int, k: int, chunk: int):
    """The candidate keys ``a * N + b`` (``a < b``, sorted, once) of a record shard searched against the index."""
    import faiss

    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    key = index_box[0].hex()
    if _CACHE.get("index_key") != key:  # deserialised once per worker
        import ray

        _CACHE["index"], _CACHE["index_key"] = faiss.deserialize_index(ray.get(index_box[0])), key
    li, ri = search_pairs(_CACHE["index"], x[start:stop], start, k, chunk)
    keep = (ri >= 0) & (li != ri)
    li, ri = li[keep], ri[keep]
    keys = sorted_unique(np.minimum(li, ri) * x.shape[0] + np.maximum(li, ri))
    return keys, _stat(tic, cpu, stop - start, raw_pairs=int(li.size))


def local_table(shared, x, rows: np.ndarray):
    """The field vectors (float16, as the single process's table), presence and record vectors of ``rows``."""
    vecs, present = _torch_fields(shared)
    v, m = ls.gather_fields(vecs, present, shared["codes"], list(shared["codes"]), rows)
    return v.half(), m, x[rows]


def rerank_task(clf, shared, x, ab, start: int, stop: int):
    """Re-ranker and cosine scores of the candidate pairs ``start:stop``."""
    tic, cpu = time.time(), time.process_time()
    ls.set_threads(1)
    a, b = ab[0, start:stop], ab[1, start:stop]
    rows, inv = sorted_unique(np.concatenate([a, b]), return_inverse=True)
    table, mask, xr = local_table(shared, x, rows)
    scores = score_pairs(clf, table, mask, xr, inv[:a.size], inv[a.size:]) if clf is not None else None
    return (scores, scores_of(x, a, b)), _stat(tic, cpu, stop - start, records=int(rows.size))


class Tasks:
    """Submits a phase's tasks, waits for all, keeps each task's stats (worker pid, times, rows, peak RSS)."""

    def __init__(self, ray) -> None:
        self.ray, self.phases, self.puts = ray, {}, []

    def put(self, name: str, value, nbytes: int):
        tic = time.perf_counter()
        ref = self.ray.put(value)
        self.puts.append({"name": name, "gb": round(nbytes / 1e9, 4), "seconds": round(time.perf_counter() - tic, 3)})
        return ref

    def run(self, name: str, fn, calls: list[tuple]) -> list:
        remote = self.ray.remote(num_cpus=1, num_returns=2, max_retries=0)(fn)
        tic = time.time()
        refs = [remote.remote(*c) for c in calls]
        stats = self.ray.get([s for _, s in refs])
        wall = time.time() - tic
        busy = sum(s["end"] - s["start"] for s in stats)
        cpu = sum(s["cpu_s"] for s in stats)
        workers: dict = {}
        for s in stats:
            w = workers.setdefault(s["pid"], {"tasks": 0, "seconds": 0.0, "rows": 0, "maxrss_gb": 0.0})
            w["tasks"] += 1
            w["seconds"] += s["end"] - s["start"]
            w["rows"] += s["rows"]
            w["maxrss_gb"] = max(w["maxrss_gb"], s["maxrss_gb"])
        for w in workers.values():
            w["rows_per_s"] = round(w["rows"] / max(w["seconds"], 1e-9), 1)
            w["seconds"] = round(w["seconds"], 2)
        rows = sum(s["rows"] for s in stats)
        self.phases[name] = {
            "tasks": len(calls), "wall_s": round(wall, 2), "task_s_sum": round(busy, 2), "task_cpu_s_sum": round(cpu, 2),
            "rows": rows, "rows_per_task_cpu_s": round(rows / max(cpu, 1e-9), 1),
            "rows_per_task_s": round(rows / max(busy, 1e-9), 1),
            "first_task_start_s": round(min(s["start"] for s in stats) - tic, 3),
            "busy_share": round(busy / max(wall * len(workers), 1e-9), 3), "workers": workers,
            "task_seconds": [round(s["end"] - s["start"], 3) for s in stats],
            **{k: sum(s[k] for s in stats) for k in ("raw_pairs", "records") if k in stats[0]}}
        return [r for r, _ in refs]


def run_ray(args) -> tuple[dict, dict[str, np.ndarray]]:
    ls.set_threads(args.threads)
    import faiss
    import torch

    from engine_linkage.synthetic import FIELDS, generate_people, true_pairs
    from engine_serving.ray_cluster import RayCluster

    for size, of in ((args.shard, max(args.chunk, 8192)), (args.pair_shard, 8192), (args.value_shard, 4096)):
        if size % of:
            raise SystemExit(f"shard sizes must be multiples of the single process's chunks: {size} % {of} != 0")
    torch.manual_seed(args.seed)
    n = args.records
    ph = Phases()
    report: dict = {"records": n, "args": vars(args) | {"out": str(args.out)}, "load_average_start": os.getloadavg(),
                    "cpus": os.cpu_count()}
    ph.start("generate")
    df = generate_people(n, duplicate_share=args.duplicate_share, seed=args.seed)
    entity = df["entity"].to_numpy()
    true_a, true_b = true_pairs(entity)
    ph.stop(true_pairs=int(true_a.size))

    ph.start("dedupe")
    text = ls.make_text_encoder(args)  # before the model, as the single process (the same random weights)
    codes, values = {}, {}
    for f in FIELDS:
        codes[f], values[f] = ls.distinct_codes(df[f])
    del df
    ph.stop(distinct_values=int(sum(len(v) for v in values.values())))

    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([old_path] if old_path else []))  # for the workers
    cluster = RayCluster(args.ray_address, num_cpus=args.workers)
    try:
        ray = cluster.start()
        report["ray"] = {"startup_s": round(cluster.startup_s, 2), "cluster_cpus": cluster.cpus(),
                         "object_store_gb": round(ray.cluster_resources().get("object_store_memory", 0) / 1e9, 2)}
        t = Tasks(ray)
        t.run("warmup", warmup_task, [()] * cluster.cpus())
        ph.start("featurize")
        vs = args.value_shard
        shards = {f: [(args, values[f][i:i + vs]) for i in range(0, len(values[f]), vs)] for f in FIELDS}
        calls = [c for f in FIELDS for c in shards[f]]
        refs = t.run("featurize", featurize_task, calls)
        ids_refs, pos = {}, 0
        for f in FIELDS:
            ids_refs[f], pos = refs[pos:pos + len(shards[f])], pos + len(shards[f])
        del refs
        widths = {f: max(ray.get(r).shape[1] for r in ids_refs[f]) for f in FIELDS}
        del values, shards, calls
        ph.stop(tasks=t.phases["featurize"]["tasks"], width=int(sum(widths.values())))

        ph.start("train")
        model, contrast = ls.make_model(args, text, widths)
        group = ls.split_entities(entity, true_a, args.train_pairs, args.valid_pairs, args.seed)
        tr = group[true_a] == 0
        sample = np.random.default_rng(0).choice(n, size=min(n, 2000), replace=False)
        rows = np.unique(np.concatenate([true_a[tr], true_b[tr], sample]))
        sub_codes, sub_tables = {}, {}
        for f in FIELDS:  # the train records' ids, gathered from the featurise shards
            u, sub_codes[f] = np.unique(codes[f][rows], return_inverse=True)
            parts = [ray.get(ids_refs[f][s])[u[u // vs == s] - s * vs] for s in np.unique(u // vs)]
            sub_tables[f] = np.concatenate([np.pad(p, ((0, 0), (0, widths[f] - p.shape[1]))) for p in parts])
            sub_codes[f] = sub_codes[f].astype(np.int32)
        log: list = []
        steps = ls.train(model, contrast, np.searchsorted(rows, true_a[tr]), np.searchsorted(rows, true_b[tr]),
                         FIELDS, sub_codes, sub_tables, args, log)
        model.eval()
        ph.stop(pairs=int(tr.sum()), steps=steps, epochs=log)

        ph.start("embed")
        model_ref = t.put("model", model, sum(p.numel() * p.element_size() for p in model.parameters()))
        vec_refs = t.run("field_vectors", field_vectors_task,
                         [(model_ref, f, r, widths[f]) for f in FIELDS for r in ids_refs[f]])
        shared, pos = {"codes": codes, "vecs": {}, "present": {}}, 0
        for f in FIELDS:
            got = ray.get(vec_refs[pos:pos + len(ids_refs[f])])
            pos += len(got)
            shared["vecs"][f] = np.concatenate([g[0] for g in got])
            shared["present"][f] = np.concatenate([g[1] for g in got])
        del vec_refs, got, ids_refs
        shared_ref = t.put("codes, field vectors", shared, sum(a.nbytes for d in shared.values() for a in d.values()))
        del shared
        shared = ray.get(shared_ref)
        x_refs = t.run("fuse", fuse_task, [(model_ref, shared_ref, i, min(n, i + args.shard))
                                           for i in range(0, n, args.shard)])
        x = np.concatenate(ray.get(x_refs))
        del x_refs
        with torch.no_grad():  # the unique-value path equals the encoder's own forward on full records
            pos = np.searchsorted(rows, sample)
            ref = model(torch.from_numpy(ls.record_ids(pos, FIELDS, sub_codes, sub_tables)),
                        torch.zeros((sample.size, 0)))
        err = float(np.abs(ref.numpy() - x[sample]).max())
        if err > 1e-4:
            raise SystemExit(f"embedding check failed: max |forward - fused| = {err}")
        del sub_codes, sub_tables
        ph.stop(max_abs_diff_vs_forward=err)

        ph.start("index")
        nlist = args.nlist or max(64, int(np.sqrt(n) / 2))
        index = build_ivf(x, nlist, args.nprobe, args.seed, add=False)
        trained = time.perf_counter()
        index.add(x)
        add_s = time.perf_counter() - trained
        blob = faiss.serialize_index(index)
        del index
        x_ref = t.put("record vectors", x, x.nbytes)
        del x
        x = ray.get(x_ref)
        index_ref = t.put("index", blob, blob.nbytes)
        ph.stop(index=f"faiss IVF{nlist},PQ{args.dim // 2}x4fs nprobe={args.nprobe}", add_s=round(add_s, 2),
                index_gb=round(blob.nbytes / 1e9, 4))
        del blob

        ph.start("block")
        key_refs = t.run("block", block_task, [([index_ref], x_ref, i, min(n, i + args.shard), args.k, args.chunk)
                                               for i in range(0, n, args.shard)])
        ph.stop()
        ph.start("pairs")
        keys = sorted_unique(np.concatenate(ray.get(key_refs)))
        del key_refs, index_ref
        a, b = keys // n, keys % n
        del keys
        ph.stop(candidates=int(a.size))

        clf_ref = None
        if args.rerank:
            ph.start("rerank_train")
            train_mask = ls.rerank_train_mask(group, a, b)
            pick, g = reranker_rows(train_mask, args)
            recs, inv = sorted_unique(np.concatenate([a[pick], b[pick]]), return_inverse=True)
            table, mask, xr = local_table(shared, x, recs)
            rlog: list = []
            clf = train_reranker(table, mask, xr, inv[:pick.size], inv[pick.size:],
                                 entity[a[pick]] == entity[b[pick]], g, args, rlog)
            del table, mask, xr
            clf_ref = t.put("classifier", clf, sum(p.numel() * p.element_size() for p in clf.parameters()))
            ph.stop(train_pairs=int(train_mask.sum()), epochs=rlog)
        ph.start("rerank")
        ab_ref = t.put("candidate pairs", np.stack([a, b]), 16 * a.size)
        out_refs = t.run("rerank", rerank_task, [(clf_ref, shared_ref, x_ref, ab_ref, i, min(a.size, i + args.pair_shard))
                                                 for i in range(0, a.size, args.pair_shard)])
        got = ray.get(out_refs)
        cosine = np.concatenate([c for _, c in got])
        scores = np.concatenate([s for s, _ in got]) if args.rerank else cosine
        del got, out_refs, shared, ab_ref
        ph.stop()
        x = np.array(x)  # out of the object store before it goes
        del x_ref, shared_ref
        report["ray"].update({"puts": t.puts, "phases": t.phases})
    finally:
        cluster.stop()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path

    ph.start("evaluate")
    metrics, _ = ls.final_metrics(a, b, scores, cosine, n, entity, group, true_a, true_b, args.rerank)
    ph.stop()
    report.update({"phases": ph.rows, "metrics": metrics, "total_seconds": round(time.perf_counter() - START, 2),
                   "pipeline_seconds": round(sum(r["seconds"] for r in ph.rows.values()), 2),
                   "driver_peak_rss_gb": round(peak_gb(), 3), "peak_rss_gb": round(peak_gb(), 3),
                   "load_average_end": os.getloadavg()})
    return report, {"a": a, "b": b, "scores": scores, "cosine": cosine, "x": x}


def compare(report: dict, got: dict, args) -> dict:
    """Run the single process on the same records and arguments; the differences (all zero when they agree)."""
    single_args = copy.copy(args)
    single_args.exact_max = 0  # the Ray run always uses the IVF index
    single, ref = ls.run(single_args)
    out = {"same_candidates": bool(np.array_equal(got["a"], ref["a"]) and np.array_equal(got["b"], ref["b"])),
           "same_metrics": single["metrics"] == report["metrics"], "single_process_seconds": single["pipeline_seconds"],
           "single_process_phases": single["phases"]}
    if out["same_candidates"]:
        out.update({f"max_abs_diff_{k}": float(np.abs(got[k] - ref[k]).max(initial=0)) for k in ("scores", "cosine",
                                                                                                  "x")})
    return out


def make_parser():
    p = ls.make_parser()
    p.description = __doc__.splitlines()[0]
    p.add_argument("--workers", type=int, default=2, help="CPUs of the local cluster (one task per CPU)")
    p.add_argument("--ray-address", default=None, help="HOST:PORT of a running cluster's head (default: local)")
    p.add_argument("--shard", type=int, default=65_536, help="records per embed / block task")
    p.add_argument("--value-shard", type=int, default=65_536, help="distinct values per featurise task")
    p.add_argument("--pair-shard", type=int, default=131_072, help="candidate pairs per re-rank task")
    p.add_argument("--compare", action="store_true", help="also run the single process and check the same numbers")
    p.set_defaults(exact_max=0)
    return p


def main() -> None:
    args = make_parser().parse_args()
    report, got = run_ray(args)
    if args.compare:
        report["compare"] = compare(report, got, args)
        print({k: v for k, v in report["compare"].items() if k != "single_process_phases"})
    ls.write_report(report, args.out or ls.ROOT / "out" / "linkage" / f"scale_ray_{args.records}.json")
    if args.compare and not (report["compare"]["same_candidates"] and report["compare"]["same_metrics"]):
        raise SystemExit("the Ray run and the single process differ")


if __name__ == "__main__":
    import linkage_scale_ray  # the tasks by reference to the module (the workers import it), not to __main__

    linkage_scale_ray.main()
