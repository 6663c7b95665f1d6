"""Every DeepMatcher pipeline of ``pipelines/`` runs with ``data.fields`` left to inference (issue #21).

* fast: each pipeline, one epoch, on a small generated set in its source's layout whose columns no pipeline names
  (``title, manufacturer, price``, Amazon-Google's), with the inferred schema checked (the rule applied whatever the
  tables' size, ``MIN_RECORDS`` 0, so the set has a text, a categorical and a numeric field);
* a tracked run: the inferred schema is in the run's ``config``/``data`` params and its ``pipeline.yaml``, and that
  file, run again, gives the same figures;
* slow (``ENGINE_SLOW_TESTS=1``): each pipeline on each real DeepMatcher set of its layout, the rows of
  ``benchmarks/linkage_schema_matrix.py`` (it needs ``$ENGINE_DATA_ROOT`` or ``../shared/data``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from engine.cli import cli

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted(p for p in (ROOT / "pipelines").glob("linkage-*.yaml")
                   if p.stem.split("-")[1] in ("structured", "textual", "dirty"))
SCHEMA = {"title": "text", "manufacturer": "categorical", "price": "numeric"}
BRANDS = ["acme", "globex", "initech"]
WORDS = ["wireless", "mouse", "keyboard", "usb", "hub", "laptop", "stand", "cable", "hdmi", "monitor", "speaker",
         "webcam", "charger", "adapter", "black", "silver", "pro", "mini", "ultra", "slim"]


def _matrix():
    spec = importlib.util.spec_from_file_location("linkage_schema_matrix", ROOT / "benchmarks/linkage_schema_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _records(n: int, seed: int = 0):
    """n products and a noisy copy of each: (title, manufacturer, price) both sides."""
    rng = random.Random(seed)
    left, right = [], []
    for i in range(n):
        title = " ".join(rng.sample(WORDS, 4)) + f" m{i}"
        brand, price = BRANDS[i % 3], f"{rng.uniform(5, 500):.2f}"
        left.append((title, brand, price))
        words = title.split()
        rng.shuffle(words)
        right.append((" ".join(words[:-1] + [words[-1] + "x"]), brand, f"${price}" if i % 2 else price))
    return left, right, rng


def write_deepmatcher_set(d: Path, n: int = 40) -> Path:
    """tableA / tableB and train / valid / test pairs (each match and one non-match) in the DeepMatcher layout."""
    d.mkdir(parents=True, exist_ok=True)
    left, right, rng = _records(n)
    for name, rows, prefix in (("tableA.csv", left, "a"), ("tableB.csv", right, "b")):
        (d / name).write_text("id,title,manufacturer,price\n" + "".join(
            f"{prefix}{i},{t},{m},{p}\n" for i, (t, m, p) in enumerate(rows)))
    order = list(range(n))
    rng.shuffle(order)
    cuts = {"train": order[: n // 2], "valid": order[n // 2: 3 * n // 4], "test": order[3 * n // 4:]}
    head = ("label,left_id,left_title,left_manufacturer,left_price,right_id,right_title,right_manufacturer,"
            "right_price\n")
    for split, ids in cuts.items():
        lines = []
        for i in ids:
            for j, y in ((i, 1), ((i + 1) % n, 0)):
                lines.append(f"{y},a{i},{','.join(left[i])},b{j},{','.join(right[j])}\n")
        (d / f"{split}.csv").write_text(head + "".join(lines))
    return d


def write_ditto_set(d: Path, n: int = 40) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    left, right, rng = _records(n)

    def ser(r):
        return " ".join(f"COL {c} VAL {v}" for c, v in zip(SCHEMA, r))

    order = list(range(n))
    rng.shuffle(order)
    cuts = {"train": order[: n // 2], "valid": order[n // 2: 3 * n // 4], "test": order[3 * n // 4:]}
    for split, ids in cuts.items():
        (d / f"{split}.txt").write_text("".join(f"{ser(left[i])}\t{ser(right[j])}\t{y}\n" for i in ids
                                                for j, y in ((i, 1), ((i + 1) % n, 0))))
    return d


def adapt(pipeline: Path, tmp_path: Path, data_path: Path, fields=None, tracking=None, cross_model=None) -> Path:
    """The pipeline, one epoch, on ``data_path`` with ``data.fields`` left out (or ``fields``), its outputs (matches,
    checkpoints, the sentence encoder's cache) under ``tmp_path``; a cross-encoder from ``cross_model``."""
    doc = yaml.safe_load(pipeline.read_text())
    doc["data"]["path"] = str(data_path)
    doc["data"].pop("fields", None)
    if fields is not None:
        doc["data"]["fields"] = fields
    doc["train"].update(epochs=1, checkpoint_dir=str(tmp_path / "ck"))
    model = doc["model"]
    model["matches_out"] = str(tmp_path / "matches.parquet")
    if model.get("cross_encoder"):
        model["cross_encoder"].update(epochs=1, model_path=str(cross_model), max_length=64)
    for spec in (s for v in (model.get("encoders") or {}).values() for s in (v if isinstance(v, list) else [v])):
        if "cache_dir" in spec:
            spec["cache_dir"] = str(tmp_path / "cache")
    doc["tracking"] = {"uri": tracking} if tracking else {"enabled": False}
    out = tmp_path / f"{pipeline.stem}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def needs_minilm(pipeline: Path) -> bool:
    """A ``sentence`` encoder (the real MiniLM; a cross-encoder is given the tiny BERT)."""
    model = yaml.safe_load(pipeline.read_text())["model"]
    return any(s.get("name") == "sentence" for v in (model.get("encoders") or {}).values()
               for s in (v if isinstance(v, list) else [v]))


def minilm_installed() -> bool:
    try:
        from engine_linkage.sentence import default_model_path

        return Path(default_model_path()).exists()
    except Exception:  # the wheel is an optional extra (engine-linkage[minilm])
        return False


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.tiny_bert import write_tiny_bert

    words = [w for r in _records(40)[0] for w in " ".join(r).split()]
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), [*words, *SCHEMA, ":", "|", "$", "x"])


@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_pipeline_runs_with_inferred_schema(tmp_path, linkage_plugins, request, monkeypatch, pipeline):
    from engine_linkage import schema

    monkeypatch.setattr(schema, "MIN_RECORDS", 0)
    if needs_minilm(pipeline) and not minilm_installed():
        pytest.skip("needs the all-MiniLM-L6-v2 wheel (engine-linkage[minilm])")
    doc = yaml.safe_load(pipeline.read_text())
    cross = request.getfixturevalue("tiny_bert") if doc["model"].get("cross_encoder") else None
    source = doc["data"]["source"]
    data = (write_ditto_set if source == "ditto_txt" else write_deepmatcher_set)(tmp_path / "set")
    result = invoke("run", adapt(pipeline, tmp_path, data, cross_model=cross), "--metrics-out", tmp_path / "m.json")
    assert "engine: data.fields inferred: title: text, manufacturer: categorical, price: numeric" in result.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["epochs"] == 1 and all(math.isfinite(m[k]) and 0 <= m[k] <= 1 for k in ("f1", "precision", "recall"))
    if source == "deepmatcher_csv":  # the full tables: blocking over 40 x 40 records, k candidates each
        k = yaml.safe_load(pipeline.read_text())["model"]["blocking_k"]
        assert m["num_candidates"] == 40 * k and m["reduction_ratio"] == pytest.approx(1 - k / 40)


def test_tracked_run_logs_inferred_schema_and_reruns_the_same(tmp_path, linkage_plugins, monkeypatch):
    import mlflow

    from engine_linkage import schema

    monkeypatch.setattr(schema, "MIN_RECORDS", 0)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    data = write_deepmatcher_set(tmp_path / "set")
    p = adapt(ROOT / "pipelines/linkage-structured-walmart-amazon.yaml", tmp_path, data, fields="auto", tracking=uri)
    invoke("run", p, "--metrics-out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    params = client.get_run(m["run_id"]).data.params
    assert {k: params[f"config.data.fields.{k}"] for k in SCHEMA} == SCHEMA  # 'auto' replaced by the schema
    assert {k: params[f"data.fields.{k}"] for k in SCHEMA} == SCHEMA and params["data.fields_inferred"] == "True"
    logged = Path(client.download_artifacts(m["run_id"], "pipeline.yaml", str(tmp_path / "dl")))
    doc = yaml.safe_load(logged.read_text())
    assert doc["data"]["fields"] == SCHEMA
    # the logged pipeline is a run of its own: the explicit schema, the same figures
    doc["tracking"] = {"enabled": False}
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = invoke("run", again, "--metrics-out", tmp_path / "m2.json")
    assert "data.fields inferred" not in result.stderr
    m2 = json.loads((tmp_path / "m2.json").read_text())
    for key in ("f1", "precision", "recall", "threshold", "pair_completeness"):
        assert m2[key] == pytest.approx(m[key], abs=1e-9), key


def _real_cases():
    root = Path(os.environ.get("ENGINE_DATA_ROOT", ROOT.parent / "shared/data"))
    if not (root / "em-deepmatcher-csv").is_dir():
        return []
    return _matrix().cases(root.resolve())


@pytest.mark.slow
@pytest.mark.parametrize("case", _real_cases(), ids=lambda c: f"{c['pipeline']}--{c['layout']}-{c['set']}")
def test_pipeline_on_every_real_set_of_its_layout(tmp_path, linkage_plugins, case):
    """One row of the matrix (its ``engine run`` arguments, in process): the pipeline, one epoch, on a real set with
    ``data.fields`` omitted."""
    result = invoke(*_matrix().case_args(case, tmp_path, pairs=400))
    assert "engine: data.fields inferred: " in result.stderr
    m = json.loads((tmp_path / f"{case['pipeline']}--{case['set']}.json").read_text())
    assert m["epochs"] == 1 and math.isfinite(m["f1"]) and 0 <= m["f1"] <= 1
