"""Deduplicate N synthetic person records with the char n-gram bi-encoder: wall time per phase, peak memory, quality.

Phases (each timed in wall and CPU seconds, with the process's resident memory after it and the peak so far):

1. ``generate``: ``engine_linkage.synthetic.generate_people(N)`` (FEBRL's fields and FEBRL-like corruption, known
   entities; default 40 % duplicates).
2. ``featurize``: each field's *distinct* values through ``CharNgramEncoder.featurize`` (hashed 2- and 3-grams +
   words, as ``pipelines/linkage-febrl3.yaml``); a record is its per-field codes into those tables.
3. ``train``: a brief contrastive training (``RecordEncoder`` with one shared ``CharNgramEncoder``, attention fusion,
   symmetric ``InfoNCE`` at temperature 0.05, in-batch negatives) on the true duplicate pairs of a small labelled
   sample of entities (``--train-pairs``).
4. ``embed``: the field vectors of each distinct value (the char n-gram encoder sees every value once), gathered and
   fused into unit record vectors in chunks (``RecordEncoder.fuse``); checked against ``RecordEncoder.forward`` on
   the full featurised records of a sample.
5. ``block``: each record's ``--k`` nearest other records by inner product with faiss: exact (``IndexFlatIP``
   through ``engine_linkage.blocking.knn_candidates``) up to ``--exact-max`` records, else an inverted file over
   4-bit fast-scan product codes (``IVF<nlist>,PQ<d/2>x4fs``, ``--nprobe`` lists searched per record; see
   :func:`ivf_candidates`); kept once as unordered pairs with their exact cosine.
6. ``rerank`` (default; ``--no-rerank``: the cosine is the score): ``engine_linkage.model.PairClassifier`` (per-field
   cosines and presence flags, record cosine; an MLP) trained for ``--rerank-epochs`` on at most
   ``--rerank-max-pairs`` candidate pairs that touch a train record (their labels are known: every record of a train
   entity is known), then scores every candidate pair (the retrieve-then-rerank of the FEBRL pipelines, without the
   n-gram Jaccard features).
7. ``evaluate``: the entities are split into train (the training sample), valid (``--valid-pairs`` true pairs, for the
   threshold) and test (the rest, about 96 % of the pairs); the match threshold of maximal F1 is chosen on the
   candidate pairs that touch a valid record (and no train record) and applied to the pairs among test records.
   Reported: pair completeness of the test duplicate pairs, precision / recall / F1 of the match class (a true pair
   that blocking missed is a false negative), the same over all records, the pairwise precision / recall / F1 of
   the connected components of the matches against the true entities (and the largest component), and with the
   re-ranker, the cosine-only figures beside.

One thread by default (``--threads``: torch, faiss, polars). The JSON report goes to ``--out`` (default
``out/linkage/scale_<N>.json``). ``benchmarks/linkage_scale_ray.py`` runs the same steps as Ray tasks over shards (the
same numbers); :func:`run` is the whole benchmark in one process.

    .venv/bin/python benchmarks/linkage_scale.py --records 100000 --compare-exact
    .venv/bin/python benchmarks/linkage_scale.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivf_pairs import ivf_candidates, scores_of  # noqa: E402
from phases import START, Phases, peak_gb, release_free_memory  # noqa: E402
from rerank_pairs import rerank  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIELD_ENCODER = "text"


def distinct_codes(s):
    """The codes (int32 [N]) of a column's values into its sorted distinct values (a polars Series; "" for missing,
    first when present: the rank order)."""
    import polars as pl

    s = s.fill_null("")
    return (s.rank("dense") - 1).cast(pl.Int32).to_numpy(writable=True), s.unique().sort()


def featurize(df, fields, encoder):
    """Per field: the codes of the records' values (int32 [N]) and the featurised distinct values (int64 [U, L])."""
    codes, tables = {}, {}
    for f in fields:
        codes[f], values = distinct_codes(df[f])
        tables[f] = encoder.featurize(values.to_list())
        rows = np.random.default_rng(0).choice(df.height, size=min(df.height, 500), replace=False)
        direct = encoder.featurize(df[f].gather(rows).to_list())  # the codes point at each record's own value
        got = tables[f][codes[f][rows]]
        if not np.array_equal(got[:, :direct.shape[1]], direct) or got[:, direct.shape[1]:].any():
            raise SystemExit(f"featurize check failed on field {f!r}")
    return codes, tables


def record_ids(rows: np.ndarray, fields, codes, tables) -> np.ndarray:
    """The featurised records ``int64 [B, W]`` (the fields' id blocks side by side)."""
    return np.concatenate([tables[f][codes[f][rows]] for f in fields], axis=1)


def split_entities(entity: np.ndarray, pair_a: np.ndarray, train_pairs: int, valid_pairs: int, seed: int):
    """Entity group per record (0 train, 1 valid, 2 test): a random order of the duplicated entities, cut where
    the train / valid pair budgets are reached (at most 20 % / 10 % of the true pairs)."""
    train_pairs = min(train_pairs, int(0.2 * pair_a.size))
    valid_pairs = min(valid_pairs, int(0.1 * pair_a.size))
    rng = np.random.default_rng(seed + 1)
    per_entity = np.bincount(entity[pair_a], minlength=int(entity.max()) + 1)
    dup_entities = rng.permutation(np.flatnonzero(per_entity))
    cum = np.cumsum(per_entity[dup_entities])
    n_train = int(np.searchsorted(cum, train_pairs)) + 1
    n_valid = int(np.searchsorted(cum, train_pairs + valid_pairs)) + 1
    group_of = np.full(per_entity.shape[0], 2, np.int8)
    group_of[dup_entities[:n_train]] = 0
    group_of[dup_entities[n_train:n_valid]] = 1
    return group_of[entity]


def train(model, contrast, rows_a, rows_b, fields, codes, tables, args, log):
    import torch

    opt = torch.optim.Adam(list(model.parameters()) + list(contrast.parameters()), lr=args.lr)
    g = np.random.default_rng(args.seed + 2)
    n, bs = rows_a.shape[0], args.batch_size
    steps, losses = 0, []
    model.train()
    for epoch in range(args.epochs):
        order = g.permutation(n)
        for i in range(0, n - 1, bs):
            idx = order[i:i + bs]
            if idx.shape[0] < 2:
                continue
            a = torch.from_numpy(record_ids(rows_a[idx], fields, codes, tables))
            b = torch.from_numpy(record_ids(rows_b[idx], fields, codes, tables))
            empty = torch.zeros((idx.shape[0], 0))
            loss = contrast(model(a, empty), model(b, empty)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
        log.append({"epoch": epoch, "loss": float(np.mean(losses[-max(1, n // bs):]))})
        print(f"  epoch {epoch}: loss {log[-1]['loss']:.4f}", flush=True)
    return steps


def field_vectors(model, fields, tables, chunk: int):
    """The unit field vector and presence of each distinct value of each field (the char n-gram encoder sees each
    distinct value once)."""
    import torch
    import torch.nn.functional as F

    text = model.encoders[FIELD_ENCODER]
    vecs, present = {}, {}
    with torch.no_grad():
        for f in fields:
            t = torch.from_numpy(tables[f])
            parts = [text(t[i:i + chunk]) for i in range(0, t.shape[0], chunk)]
            vecs[f] = F.normalize(torch.cat([p[0] for p in parts]), dim=-1)  # as RecordEncoder.field_vectors
            present[f] = torch.cat([p[1] for p in parts])
            del parts
            release_free_memory()
    return vecs, present


def gather_fields(vecs, present, codes, fields, rows: np.ndarray):
    """``[B, F, D]`` field vectors and ``[B, F]`` presence of the records ``rows``."""
    import torch

    c = {f: torch.from_numpy(codes[f][rows]).long() for f in fields}
    return (torch.stack([vecs[f][c[f]] for f in fields], 1), torch.stack([present[f][c[f]] for f in fields], 1))


def embed(model, vecs, present, codes, fields, n: int, chunk: int):
    """Unit record vectors ``float32 [N, D]`` (the records' field vectors gathered and fused in chunks), and the
    field vectors and presence of every record, ``float16 [N, F, D]`` and ``bool [N, F]``, for the re-ranker (one
    row gather per pair side instead of one per field)."""
    import torch

    out = np.empty((n, model.dim), np.float32)
    table = torch.empty((n, len(fields), model.dim), dtype=torch.float16)
    mask = torch.empty((n, len(fields)), dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, n, chunk):
            v, m = gather_fields(vecs, present, codes, fields, np.arange(i, min(n, i + chunk)))
            table[i:i + chunk], mask[i:i + chunk] = v.half(), m
            out[i:i + chunk] = model.fuse(v, m).numpy()
            if (i // chunk) % 32 == 31:
                release_free_memory()
    return out, table, mask


def evaluate(a, b, scores, label, truth, n, entity, group, true_a, cluster: bool = True) -> dict[str, float]:
    """Threshold on valid, figures on test and on everything (see the module docstring). ``label``: whether each
    candidate is a true pair; ``truth``: the true pairs' keys (``pair_keys``), in the order of ``true_a``."""
    from engine_linkage.metrics import best_threshold, classify, cluster_prf

    out: dict[str, float] = {}
    ga, gb = group[a], group[b]
    valid = ((ga == 1) | (gb == 1)) & (ga != 0) & (gb != 0)
    n_valid = int((group[true_a] == 1).sum())
    threshold, vm = best_threshold(scores[valid], label[valid], n_valid - int(label[valid].sum()))
    out.update({"threshold": threshold, "valid_f1": vm["f1"]})
    test = (ga == 2) & (gb == 2)
    t = truth[group[true_a] == 2]
    out.update({f"test_{k}": v for k, v in classify(scores[test], label[test], threshold,
                                                    t.size - int(label[test].sum())).items()})
    out["test_pair_completeness"] = float(label[test].sum() / max(t.size, 1))
    out["test_true_pairs"] = int(t.size)
    out.update({f"all_{k}": v for k, v in classify(scores, label, threshold, int(truth.size - label.sum())).items()})
    out["all_pair_completeness"] = float(label.sum() / max(truth.size, 1))
    out["candidates"] = int(a.size)
    out["reduction_ratio"] = 1.0 - a.size / (n * (n - 1) / 2)
    match = scores >= threshold
    out["matches"] = int(match.sum())
    if cluster:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(int(match.sum()), np.int8), (a[match], b[match])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        out.update({f"cluster_{k}": v for k, v in cluster_prf(comp, entity).items()})
        out["largest_cluster"] = int(np.bincount(comp).max())
    return out


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duplicate-share", type=float, default=0.4)
    p.add_argument("--threads", type=int, default=1, help="torch / faiss / polars threads")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--train-pairs", type=int, default=20_000, help="labelled true pairs to train on")
    p.add_argument("--valid-pairs", type=int, default=5_000, help="labelled true pairs to choose the threshold on")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--k", type=int, default=10, help="candidates per record")
    p.add_argument("--exact-max", type=int, default=50_000, help="exact search up to this many records, else IVF")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (0: sqrt(N) / 2, at least 64)")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per record")
    p.add_argument("--compare-exact", action="store_true", help="also block exactly and compare (validation)")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True,
                   help="re-score the candidates with a pair classifier over field similarities (else: cosine)")
    p.add_argument("--rerank-epochs", type=int, default=3)
    p.add_argument("--rerank-lr", type=float, default=0.003)
    p.add_argument("--rerank-max-pairs", type=int, default=200_000, help="labelled candidate pairs it trains on")
    p.add_argument("--chunk", type=int, default=65_536, help="records searched at once")
    p.add_argument("--out", type=Path, default=None)
    return p


def set_threads(threads: int) -> None:
    """torch / faiss / BLAS / polars threads (the environment before they are imported, and their setters)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = str(threads)
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def make_text_encoder(args):
    from engine_linkage.char_ngram import CharNgramEncoder

    return CharNgramEncoder(dim=args.dim, num_buckets=65536, ngram_sizes=(2, 3), words=True, max_ngrams=64)


def make_model(args, text, widths: dict[str, int]):
    """``RecordEncoder`` (one shared char n-gram encoder, attention fusion) over the fields' id blocks side by side,
    and the InfoNCE it trains with."""
    from engine_linkage.model import FieldSlot, RecordEncoder
    from engine_objectives.infonce import InfoNCE

    offset, slots = 0, []
    for f, width in widths.items():
        slots.append(FieldSlot(f, "text", FIELD_ENCODER, "ids", offset, width))
        offset += width
    return RecordEncoder(slots, {FIELD_ENCODER: text}, args.dim, "attention"), InfoNCE(temperature=0.05, symmetric=True)


def rerank_train_mask(group, a, b) -> np.ndarray:
    ga, gb = group[a], group[b]
    return ((ga == 0) | (gb == 0)) & (ga != 1) & (gb != 1)


def final_metrics(a, b, scores, cosine, n, entity, group, true_a, true_b, rerank: bool):
    """The evaluate phase: the figures of the scores (re-ranked or cosine) and, with the re-ranker, the cosine's."""
    from engine_linkage.metrics import pair_keys

    truth = pair_keys(true_a, true_b, n)
    label = np.isin(pair_keys(a, b, n), truth).astype(np.int64)
    metrics = evaluate(a, b, scores, label, truth, n, entity, group, true_a)
    if rerank:
        metrics["cosine_only"] = {k: v for k, v in evaluate(a, b, cosine, label, truth, n, entity, group, true_a,
                                                             cluster=False).items()
                                  if k in ("test_f1", "test_precision", "test_recall", "threshold")}
    return metrics, truth


def run(args) -> tuple[dict, dict[str, np.ndarray]]:
    """The whole benchmark in this process: the report and the candidate pairs with their scores."""
    set_threads(args.threads)
    import torch

    from engine_linkage.blocking import knn_candidates
    from engine_linkage.synthetic import FIELDS, generate_people, true_pairs

    torch.manual_seed(args.seed)
    n = args.records
    ph = Phases()
    report: dict = {"records": n, "args": vars(args) | {"out": str(args.out)}, "load_average_start": os.getloadavg(),
                    "cpus": os.cpu_count(), "import_seconds": round(time.perf_counter() - START, 2)}

    ph.start("generate")
    df = generate_people(n, duplicate_share=args.duplicate_share, seed=args.seed)
    entity = df["entity"].to_numpy()
    true_a, true_b = true_pairs(entity)
    ph.stop(true_pairs=int(true_a.size), entities=int(np.unique(entity).size))

    ph.start("featurize")
    text = make_text_encoder(args)
    codes, tables = featurize(df, FIELDS, text)
    del df
    ph.stop(distinct_values=int(sum(t.shape[0] for t in tables.values())),
            width=int(sum(t.shape[1] for t in tables.values())))

    ph.start("train")
    model, contrast = make_model(args, text, {f: tables[f].shape[1] for f in FIELDS})
    group = split_entities(entity, true_a, args.train_pairs, args.valid_pairs, args.seed)
    tr = group[true_a] == 0
    log: list = []
    steps = train(model, contrast, true_a[tr], true_b[tr], FIELDS, codes, tables, args, log)
    model.eval()
    ph.stop(pairs=int(tr.sum()), steps=steps, epochs=log)

    ph.start("embed")
    vecs, present = field_vectors(model, FIELDS, tables, 4096)  # small chunks: [chunk, L, D] stays in cache
    x, table, mask = embed(model, vecs, present, codes, FIELDS, n, 8192)
    sample = np.random.default_rng(0).choice(n, size=min(n, 2000), replace=False)
    with torch.no_grad():  # the unique-value path equals the encoder's own forward on full records
        ref = model(torch.from_numpy(record_ids(sample, FIELDS, codes, tables)), torch.zeros((sample.size, 0)))
    err = float(np.abs(ref.numpy() - x[sample]).max())
    if err > 1e-4:
        raise SystemExit(f"embedding check failed: max |forward - fused| = {err}")
    del tables, vecs, present
    ph.stop(max_abs_diff_vs_forward=err)

    ph.start("block")
    exact = n <= args.exact_max
    if exact:
        a, b = knn_candidates(x, None, args.k)
        scores = scores_of(x, a, b)
        how = {"index": "exact faiss IndexFlatIP (knn_candidates)"}
    else:
        nlist = args.nlist or max(64, int(np.sqrt(n) / 2))
        a, b, scores = ivf_candidates(x, args.k, nlist, args.nprobe, args.seed, args.chunk)
        how = {"index": f"faiss IVF{nlist},PQ{args.dim // 2}x4fs nprobe={args.nprobe}"}
    ph.stop(**how, candidates=int(a.size))

    cosine = scores
    if args.rerank:
        ph.start("rerank")
        rlog: list = []
        train_mask = rerank_train_mask(group, a, b)
        scores = rerank(table, mask, x, a, b, train_mask, entity[a] == entity[b], args, rlog)
        ph.stop(train_pairs=int(train_mask.sum()), epochs=rlog)

    ph.start("evaluate")
    metrics, truth = final_metrics(a, b, scores, cosine, n, entity, group, true_a, true_b, args.rerank)
    ph.stop()
    if args.compare_exact and not exact:
        ph.start("exact_check")
        ea, eb = knn_candidates(x, None, args.k)
        ek = ea * n + eb
        got = np.isin(ek, a * n + b)
        em = evaluate(ea, eb, scores_of(x, ea, eb), np.isin(ek, truth).astype(np.int64), truth, n, entity, group,
                      true_a, cluster=False)
        ph.stop(ivf_recall_of_exact_pairs=float(got.mean()), exact_test_pair_completeness=em[
            "test_pair_completeness"], exact_cosine_test_f1=em["test_f1"])
    report.update({"phases": ph.rows, "metrics": metrics, "total_seconds": round(time.perf_counter() - START, 2),
                   "pipeline_seconds": round(sum(r["seconds"] for k, r in ph.rows.items() if k != "exact_check"), 2),
                   "peak_rss_gb": round(peak_gb(), 3), "load_average_end": os.getloadavg()})
    return report, {"a": a, "b": b, "scores": scores, "cosine": cosine, "x": x}


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps({k: report[k] for k in ("records", "total_seconds", "pipeline_seconds", "peak_rss_gb",
                                              "load_average_start", "load_average_end")}))
    print(json.dumps(report["metrics"], indent=1))
    print(f"report: {out}")


def main() -> None:
    args = make_parser().parse_args()
    report, _ = run(args)
    write_report(report, args.out or ROOT / "out" / "linkage" / f"scale_{args.records}.json")


if __name__ == "__main__":
    sys.exit(main())
