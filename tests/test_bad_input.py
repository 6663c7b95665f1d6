"""Bad input fails cleanly: exit code 2, one ``Error:`` line that names the problem, no traceback, nothing written.

"Nothing written" is checked on the whole ``tmp_path``: no metrics file, no checkpoint directory, no MLflow store
(so no run), and the files that were there before are byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from engine.cli import cli

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ENGINE = pathlib.Path(sys.executable).with_name("engine")

TRAIN = {0: [0, 1, 2], 1: [2, 3, 4], 2: [0, 4, 5], 3: [1, 3, 5], 4: [0, 2, 5]}
TEST = {0: [3], 1: [0], 2: [1], 3: [2], 4: [4]}


# -- helpers ---------------------------------------------------------------------------------------------------------


def write_lightgcn(directory: pathlib.Path, **splits: dict[int, list]) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        text = "\n".join(" ".join(str(t) for t in [u, *items]) for u, items in rows.items()) + "\n"
        (directory / f"{name}.txt").write_text(text, encoding="utf-8")
    return directory


def base_doc(tmp_path: pathlib.Path) -> dict:
    return {
        "name": "tiny",
        "task": "graph_cf",
        "seed": 1,
        "data": {"source": "lightgcn_txt", "path": str(tmp_path / "data")},
        "model": {"encoder": {"name": "lightgcn", "embedding_dim": 4, "num_layers": 1}, "loss": "bpr"},
        "train": {"epochs": 1, "batch_size": 8, "checkpoint_dir": str(tmp_path / "checkpoints")},
        "evaluate": {"ks": [2]},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }


def write_pipeline(tmp_path: pathlib.Path, doc: dict | str) -> pathlib.Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- the cases: each sets up tmp_path and returns (CLI args, substrings the error line must contain) --------------------


def malformed_yaml(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    text = yaml.safe_dump(base_doc(tmp), sort_keys=False).replace("model:\n", "model: [unclosed\n", 1)
    return ["run", write_pipeline(tmp, text)], ["pipeline.yaml", "malformed YAML", "line "]


def unknown_component(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp)
    doc["model"]["encoder"] = "lightgnc"
    return ["run", write_pipeline(tmp, doc)], ["'lightgnc'", "model.encoder", "Did you mean 'lightgcn'?"]


def wrong_type(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp)
    doc["train"]["epochs"] = "many"
    return ["run", write_pipeline(tmp, doc)], ["train.epochs", "integer", "'many'"]


def unknown_key(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp)
    doc["train"]["epoch"] = 3
    return ["run", write_pipeline(tmp, doc)], ["train.epoch: unknown key"]


def unknown_component_option(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp)
    doc["model"]["encoder"]["layers"] = 2
    return ["run", write_pipeline(tmp, doc)], ["model.encoder.layers: unknown key"]


def missing_pipeline_file(tmp):
    return ["run", tmp / "nope.yaml"], ["nope.yaml", "not found"]


def missing_data_dir(tmp):
    doc = base_doc(tmp)
    doc["data"]["path"] = str(tmp / "no-such-dir")
    return ["run", write_pipeline(tmp, doc)], ["no-such-dir", "not a directory"]


def missing_data_file(tmp):
    write_lightgcn(tmp / "data", train=TRAIN)
    return ["run", write_pipeline(tmp, base_doc(tmp))], [str(tmp / "data"), "'test.txt'", "train.txt"]


def missing_column(tmp):
    (tmp / "inter.csv").write_text("user,product,rating\n1,10,5\n1,11,4\n2,10,3\n", encoding="utf-8")
    doc = base_doc(tmp)
    doc["data"] = {"source": "interactions", "path": str(tmp / "inter.csv")}
    return ["run", write_pipeline(tmp, doc)], ["inter.csv", "missing column 'item'", "available: user, product"]


def non_integer_ids(tmp):
    write_lightgcn(tmp / "data", train={**TRAIN, 3: [1, "x3", 5]}, test=TEST)
    return ["run", write_pipeline(tmp, base_doc(tmp))], ["train.txt", "line 4, column 5", "integer", "'x3'"]


def empty_test_split(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test={u: [] for u in TEST})
    return ["run", write_pipeline(tmp, base_doc(tmp))], ["empty test split", str(tmp / "data")]


def set_without_equals(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    return ["run", write_pipeline(tmp, base_doc(tmp)), "--set", "train.epochs"], ["--set 'train.epochs'", "KEY=VALUE"]


def monitor_not_computed(tmp):
    # the default monitor ndcg@20 with evaluate.ks [2] and a validation split: refused before the first epoch
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST, valid={0: [4], 1: [5], 2: [2], 3: [0], 4: [1]})
    doc = base_doc(tmp)
    doc["data"]["valid"] = "valid.txt"
    return ["run", write_pipeline(tmp, doc)], ["train.monitor: 'ndcg@20'", "evaluate.ks [2]", "ndcg@2"]


def _model_case(tmp, **model):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp)
    doc["model"].update(model)
    return ["run", write_pipeline(tmp, doc)]


def contrast_layer_too_deep(tmp):
    args = _model_case(tmp, augmenter="embedding_noise", contrast={"views": "cross_layer", "layer": 3})
    return args, ["model.contrast.layer: 3", "1 layers"]


def embedding_noise_on_dccf(tmp):
    args = _model_case(tmp, encoder={"name": "dccf", "embedding_dim": 4, "num_intents": 2},
                       augmenter="embedding_noise", contrast={"views": "augment"})
    return args, ["model.augmenter", "'dccf'", "'embedding_noise'"]


def random_walk_layers_mismatch(tmp):
    args = _model_case(tmp, augmenter={"name": "random_walk", "num_layers": 3}, contrast={"views": "augment"})
    return args, ["model.augmenter.num_layers: 3", "1 layers"]


def perturb_main_with_graph_augmenter(tmp):
    args = _model_case(tmp, augmenter="edge_dropout", perturb_main=True)
    return args, ["model.perturb_main", "embedding augmenter", "'edge_dropout'"]


def _corrupt_last(tmp, how: str) -> pathlib.Path:
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    last = tmp / "checkpoints" / "tiny" / "last.pt"
    last.parent.mkdir(parents=True)
    if how == "garbage":
        last.write_bytes(b"this is not a checkpoint\x00\xff" * 10)
    elif how == "truncated":
        torch.save({"model": {"w": torch.zeros(64, 64)}, "epoch": 1}, last)
        last.write_bytes(last.read_bytes()[:2000])
    else:  # a readable torch file that is not an engine checkpoint
        torch.save([1, 2, 3], last)
    return last


def corrupt_checkpoint(tmp):
    _corrupt_last(tmp, "garbage")
    return ["run", write_pipeline(tmp, base_doc(tmp)), "--resume"], ["last.pt", "corrupt or unreadable checkpoint"]


def truncated_checkpoint(tmp):
    _corrupt_last(tmp, "truncated")
    return ["run", write_pipeline(tmp, base_doc(tmp)), "--resume"], ["last.pt", "corrupt or unreadable checkpoint"]


def foreign_checkpoint(tmp):
    _corrupt_last(tmp, "foreign")
    return ["run", write_pipeline(tmp, base_doc(tmp)), "--resume"], ["last.pt", "not an engine checkpoint"]


def evaluate_corrupt_checkpoint(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    (tmp / "bad.pt").write_bytes(b"\x80\x04garbage")
    return (["evaluate", write_pipeline(tmp, base_doc(tmp)), "--checkpoint", tmp / "bad.pt"],
            ["bad.pt", "corrupt or unreadable checkpoint"])


def export_without_checkpoint(tmp):
    write_lightgcn(tmp / "data", train=TRAIN, test=TEST)
    return (["export", write_pipeline(tmp, base_doc(tmp)), "-o", tmp / "onnx"],
            [str(tmp / "checkpoints" / "tiny" / "best.pt"), "checkpoint not found"])


CASES = [malformed_yaml, unknown_component, wrong_type, unknown_key, unknown_component_option, missing_pipeline_file,
         missing_data_dir, missing_data_file, missing_column, non_integer_ids, empty_test_split, set_without_equals,
         monitor_not_computed, contrast_layer_too_deep, embedding_noise_on_dccf, random_walk_layers_mismatch,
         perturb_main_with_graph_augmenter,
         corrupt_checkpoint, truncated_checkpoint, foreign_checkpoint, evaluate_corrupt_checkpoint,
         export_without_checkpoint]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_fails_cleanly(tmp_path, graphcl_plugins, case):
    args, expected = case(tmp_path)
    if args[0] != "export":
        args += ["--metrics-out", tmp_path / "metrics.json"]
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, [str(a) for a in args])

    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in result.output
    assert result.stdout == ""
    # nothing half-written: no metrics, no checkpoint dir, no MLflow store, no export; old files untouched
    assert not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "artifacts").exists()
    assert not (tmp_path / "onnx").exists()
    if "checkpoint" not in case.__name__:
        assert not (tmp_path / "checkpoints").exists()
    assert snapshot(tmp_path) == before


# -- the real console script: exit code and a single stderr line ------------------------------------------------------


@pytest.mark.parametrize("case", [malformed_yaml, corrupt_checkpoint], ids=["malformed_yaml", "corrupt_checkpoint"])
def test_console_script_one_line_error(tmp_path, case):
    args, expected = case(tmp_path)
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOAD_PLUGINS"}  # entry points load
    proc = subprocess.run([str(ENGINE), *map(str, args), "--metrics-out", str(tmp_path / "metrics.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert all(part in lines[0] for part in expected), lines[0]
    assert proc.stdout == ""
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("objective", ["symile", "gram", "bpr"])
def test_a_non_pair_objective_in_a_two_view_contrast_is_refused_up_front(objective, graphcl_plugins, tmp_path):
    """symile / gram take a list of modalities and bpr a triplet: a contrast of two views names the key and exits 2
    before anything is trained (it used to crash at the first step with a TypeError)."""
    from engine.config import load_pipeline
    from engine.errors import ConfigError
    from engine.run import prepare

    write_lightgcn(tmp_path / "data", train=TRAIN, test=TEST)
    doc = base_doc(tmp_path)
    doc["model"].update({"augmenter": {"name": "embedding_noise", "eps": 0.1}, "skip_ego": True,
                         "contrast": {"objective": {"name": objective, "weight": 0.1}, "views": "augment"}})
    doc["train"]["monitor"] = "loss"
    with pytest.raises(ConfigError, match=f"model.contrast.objective: objective '{objective}' takes"):
        prepare(load_pipeline(doc))
