"""The linkage scale benchmark on Ray (``benchmarks/linkage_scale_ray.py``) gives the single process's numbers: the
same record vectors, candidate pairs, scores and metrics, on 20,000 records in shards of 8,192 records (3 embed and
block tasks), 4,096 distinct values (16 featurise tasks) and 65,536 pairs (3 re-rank tasks), on a local 2-CPU
cluster bound to 127.0.0.1 that the run stops."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("faiss")
pytestmark = pytest.mark.timeout(240)

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def test_ray_phases_equal_single_process():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import linkage_scale as ls
        import linkage_scale_ray as lsr
    finally:
        sys.path.remove(str(BENCHMARKS))
    import ray

    args = lsr.make_parser().parse_args(["--records", "20000", "--workers", "2", "--shard", "8192", "--chunk", "8192",
                                         "--value-shard", "4096", "--pair-shard", "65536"])
    report, got = lsr.run_ray(args)
    assert not ray.is_initialized()  # the local cluster is stopped
    phases = report["ray"]["phases"]
    assert {k: phases[k]["tasks"] for k in ("fuse", "block", "rerank")} == {"fuse": 3, "block": 3, "rerank": 3}
    assert phases["featurize"]["tasks"] > 10 and phases["featurize"]["rows"] == phases["field_vectors"]["rows"]
    assert report["ray"]["cluster_cpus"] == 2

    single_args = lsr.make_parser().parse_args(["--records", "20000", "--chunk", "8192"])
    single, ref = ls.run(single_args)
    np.testing.assert_array_equal(got["x"], ref["x"])
    np.testing.assert_array_equal(got["a"], ref["a"])
    np.testing.assert_array_equal(got["b"], ref["b"])
    np.testing.assert_array_equal(got["cosine"], ref["cosine"])
    np.testing.assert_array_equal(got["scores"], ref["scores"])
    assert report["metrics"] == single["metrics"]
    assert report["metrics"]["test_f1"] > 0.95 and report["metrics"]["candidates"] > 100_000
