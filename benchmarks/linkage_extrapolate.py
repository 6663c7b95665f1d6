"""What the Ray linkage benchmark's measured per-core rates say about a larger run: arithmetic, not a measurement.

Reads reports of ``benchmarks/linkage_scale_ray.py`` (the largest one gives the rates and the per-record sizes; a
smaller one checks how the block rate falls with N) and prints, for ``--records`` on each of ``--machines`` machines
of ``--cores`` cores: the hours of each distributed phase at the measured rate per task CPU second (one core, no
contention), the driver's serial steps scaled from the measured ones, and the sizes that decide where the design
breaks (the index, the record vectors, the field-vector tables, the candidate pairs and what their re-rank join
moves). The scaling rules are written beside each line.

    .venv/bin/python benchmarks/linkage_extrapolate.py out/linkage/scale_ray_1000000.json \\
        out/linkage/scale_ray_5000000.json --records 100000000 --machines 10 50 --cores 16
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PARALLEL = ("featurize", "field_vectors", "fuse", "block", "rerank")


def per_core_cost(rep: dict, phase: str) -> float:
    """Task CPU seconds per row (per distinct value, record or pair) of a distributed phase."""
    p = rep["ray"]["phases"][phase]
    return p["task_cpu_s_sum"] / p["rows"]


def extrapolate(reports: list[dict], records: int, machines: list[int], cores: int, gbit: float) -> str:
    big = max(reports, key=lambda r: r["records"])
    n = big["records"]
    grow = records / n
    ph = big["ray"]["phases"]
    rows = {"featurize": ph["featurize"]["rows"] * grow, "field_vectors": ph["field_vectors"]["rows"] * grow,
            "fuse": records, "block": records, "rerank": ph["rerank"]["rows"] * grow}
    cost = {p: per_core_cost(big, p) for p in PARALLEL}
    block_rule = math.sqrt(grow)  # nlist = sqrt(N) / 2 lists, nprobe fixed: 2 sqrt(N) codes scanned per query
    cost["block"] *= block_rule
    lines = [f"From the {n:,}-record run (load {big['load_average_start'][0]:.1f} at its start), to {records:,} records "
             f"({grow:g}x; distinct values and candidate pairs per record as measured).", ""]
    small = [r for r in reports if r["records"] < n]
    if small:
        s = max(small, key=lambda r: r["records"])
        seen = per_core_cost(big, "block") / per_core_cost(s, "block")
        lines.append(f"Block cost per record, {s['records']:,} -> {n:,}: x{seen:.2f} measured, "
                     f"x{math.sqrt(n / s['records']):.2f} by the sqrt(N) rule used below.")
        lines.append("")
    head = "| phase | rows at target | CPU s per 1M rows (measured) | rule | " + " | ".join(
        f"{m} x {cores} cores" for m in machines) + " |"
    lines += [head, "|" + "---|" * (4 + len(machines))]
    total = dict.fromkeys(machines, 0.0)
    for p in PARALLEL:
        rule = "x sqrt(N)" if p == "block" else "linear"
        cells = []
        for m in machines:
            t = rows[p] * cost[p] / (m * cores)
            total[m] += t
            cells.append(f"{t / 60:.1f} min")
        lines.append(f"| {p} | {rows[p]:,.0f} | {per_core_cost(big, p) * 1e6:.1f} | {rule} | " + " | ".join(cells) + " |")
    lines.append("| distributed phases, no overhead | | | | " + " | ".join(f"**{total[m] / 60:.1f} min**"
                                                                      for m in machines) + " |")
    d = big["phases"]
    serial = {"dedupe (polars, one process)": d["dedupe"]["seconds"] * grow,
              "index add (faiss, one core)": d["index"]["add_s"] * grow,
              "pairs (sort of the candidate keys)": d["pairs"]["seconds"] * grow * math.log(records) / math.log(n),
              "train + re-rank train (fixed size)": d["train"]["seconds"] + d.get("rerank_train", {}).get("seconds", 0),
              "evaluate (all scores on the driver)": d["evaluate"]["seconds"] * grow}
    lines += ["", "Driver steps, serial, if they stayed on one process (measured x growth; the sort x log N):", ""]
    lines += [f"- {k}: {v / 60:.1f} min" for k, v in serial.items()]
    size = sizes(big, records)
    lines += ["", f"Sizes at {records:,} records (measured bytes per record x growth):", ""]
    lines += [f"- {k}: {v:.1f} GB" for k, v in size.items()]
    lines.append(f"- the index again, one copy per worker as here ({cores} per machine): "
                 f"{size['IVF index (codes + ids), one copy'] * cores:.1f} GB per machine")
    moved = {"block keys to the pair dedupe": size["block output keys before the dedupe (int64)"],
             "candidate pairs to the re-rank shards": size["candidate pairs (int64 a, b)"],
             "re-rank join (the other side's field vectors)": size[
                 "re-rank join: field vectors (float16) of the records the pairs touch"]}
    lines += ["", f"Shuffles at an assumed {gbit:g} Gbit/s into each machine (not measured here: one machine):", ""]
    lines += [f"- {k}: {v:.0f} GB, " + ", ".join(f"{v / (m * gbit / 8):.0f} s on {m}" for m in machines)
              + f"; {v / machines[0]:.0f} GB per machine on {machines[0]}" for k, v in moved.items()]
    return "\n".join(lines)


def sizes(rep: dict, records: int) -> dict[str, float]:
    n = rep["records"]
    puts = {p["name"]: p["gb"] for p in rep["ray"]["puts"]}
    ph = rep["ray"]["phases"]
    pairs = ph["rerank"]["rows"] / n * records
    fields, dim = 10, rep["args"]["dim"]
    touched = ph["rerank"]["records"] / ph["rerank"]["rows"]  # records gathered per pair by the re-rank tasks
    return {
        "IVF index (codes + ids), one copy": puts["index"] / n * records,
        "record vectors float32 (one object today)": puts["record vectors"] / n * records,
        "codes + field vectors of the distinct values (one object today)": puts["codes, field vectors"] / n * records,
        "candidate pairs (int64 a, b)": 16 * pairs / 1e9,
        "block output keys before the dedupe (int64)": 8 * ph["block"]["raw_pairs"] / n * records / 1e9,
        "scores (re-ranked + cosine, float64)": 16 * pairs / 1e9,
        "re-rank join: field vectors (float16) of the records the pairs touch": pairs * touched * fields * dim * 2 / 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", type=Path, nargs="+")
    p.add_argument("--records", type=int, default=100_000_000)
    p.add_argument("--machines", type=int, nargs="+", default=[10, 50])
    p.add_argument("--cores", type=int, default=16)
    p.add_argument("--gbit", type=float, default=10.0, help="network into each machine (an assumption)")
    args = p.parse_args()
    print(extrapolate([json.loads(r.read_text()) for r in args.reports], args.records, args.machines, args.cores,
                      args.gbit))


if __name__ == "__main__":
    main()
