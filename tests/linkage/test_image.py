"""The ``image`` field encoder: featurisation against PIL by hand (conversion, resize, C-H-W order, presence flag),
absent values counted by cause, forward shapes, the options serving needs, ResNet-18 weights, and linkage runs with
an image field end to end (relative paths, numbers asserted, ONNX parity)."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from engine.cli import cli
from engine.errors import ConfigError
from engine.fields import DEFAULT_FIELD_ENCODERS, RecordEncoder, build_field_encoders, featurize_fields
from engine_linkage.image import ImageEncoder


def png(path, pixels: np.ndarray):
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def test_grayscale_without_resize_is_pil_luma_by_hand(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                    [[255, 255, 255], [0, 0, 0], [10, 200, 30]]])  # 2 x 3 pixels
    path = png(tmp_path / "x.png", rgb)
    enc = ImageEncoder(dim=4, channels=1, height=2, width=3)
    x = enc.featurize([path])
    # ITU-R 601-2 luma as PIL computes it: (R 19595 + G 38470 + B 7471 + 2^15) >> 16
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768) >> 16
    assert luma.tolist() == [[76, 150, 29], [255, 0, 124]]
    assert x.dtype == np.float32 and x.shape == (1, 1 + 6)
    assert x[0, 0] == 1.0
    np.testing.assert_allclose(x[0, 1:], luma.ravel() / 255.0, rtol=0, atol=1e-7)


def test_rgb_is_channels_first_and_resize_is_pil_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 11, 3))
    path = png(tmp_path / "x.png", rgb)
    same = ImageEncoder(dim=4, channels=3, height=7, width=11).featurize([path])
    np.testing.assert_allclose(same[0, 1:].reshape(3, 7, 11), rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)
    small = ImageEncoder(dim=4, channels=3, height=4, width=8).featurize([path])
    ref = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((8, 4), Image.Resampling.BILINEAR), np.float64)
    np.testing.assert_allclose(small[0, 1:].reshape(3, 4, 8), ref.transpose(2, 0, 1) / 255.0, atol=1e-7)
    gray = ImageEncoder(dim=4, channels=1, height=4, width=8).featurize([path])
    ref = np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("L").resize((8, 4), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(gray[0, 1:], ref.ravel() / 255.0, atol=1e-7)


def test_transparent_pixels_are_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255]]])
    path = png(tmp_path / "t.png", rgba)
    x = ImageEncoder(dim=4, channels=1, height=1, width=2).featurize([path])
    assert x[0].tolist() == [1.0, 1.0, 0.0]


def test_absent_values_are_zeros_and_counted_by_cause(tmp_path, caplog):
    good = png(tmp_path / "ok.png", np.full((4, 4), 200))
    (tmp_path / "x.png").write_bytes(b"\x89PNG not really an image")
    (tmp_path / "y.jpg").write_bytes(b"garbage")
    enc = ImageEncoder(dim=4, height=4, width=4)
    values = [good, None, "", "  ", str(tmp_path / "gone.png"), str(tmp_path / "x.png"), str(tmp_path / "y.jpg"),
              str(tmp_path)]  # a folder is not a file
    with caplog.at_level(logging.WARNING, logger="engine_linkage.image"):
        x = enc.featurize(values)
    assert x[:, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert (x[1:] == 0).all() and x[0, 1:] == pytest.approx(np.full(16, 200 / 255))
    assert enc.skipped == {"missing": 3, "not_found": 2, "corrupt": 2}
    text = caplog.text
    assert "2 of 8 image files could not be decoded" in text and str(tmp_path / "x.png") in text
    assert "2 of 8 image files not found" in text and str(tmp_path / "gone.png") in text
    enc.featurize([None])  # counts add up over calls
    assert enc.skipped["missing"] == 4


@pytest.mark.parametrize("channels,height,width,filters", [(1, 32, 128, [16, 32, 64, 128]), (3, 16, 24, [8]),
                                                           (1, 9, 13, [4, 8, 8])])
def test_forward_shapes_present_mask_and_unit_norm_records(tmp_path, channels, height, width, filters):
    rng = np.random.default_rng(1)
    paths = [png(tmp_path / f"{i}.png", rng.integers(0, 256, size=(20, 30, 3))) for i in range(3)]
    enc = ImageEncoder(dim=12, channels=channels, height=height, width=width, filters=filters)
    values = [paths[0], None, paths[1], str(tmp_path / "no.png"), paths[2]]
    x = torch.from_numpy(enc.featurize(values))
    assert x.shape == (5, 1 + channels * height * width)
    enc.eval()
    v, present = enc(x)
    assert v.shape == (5, 12) and present.tolist() == [True, False, True, False, True]
    # in a record with a text field: unit-norm records; a record whose image is absent is its text alone
    encoders = {"text": build_text_encoder(), "image": enc}
    columns = {"name": ["a b", "c d", None, "e", "f g"], "photo": values}
    feats = featurize_fields({"name": "text", "photo": "image"}, columns, encoders, {})
    rec = RecordEncoder(feats.slots, encoders, 12, "mean").eval()
    ids, vals = feats.rows(0, 5)
    with torch.no_grad():
        out = rec(ids, vals)
        fv, mask = rec.field_vectors(ids, vals)
    assert out.shape == (5, 12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert mask.tolist() == [[True, True], [True, False], [False, True], [True, False], [True, True]]
    torch.testing.assert_close(out[1], fv[1, 0])


def test_cnn_ignores_paper_and_ink_levels():
    """Each image is standardised first: a scan lighter or darker, or of more or less contrast, is the same input."""
    from engine_linkage.image import SmallCNN

    cnn = SmallCNN(1, [4, 8]).eval()
    x = torch.rand(3, 1, 8, 16)
    with torch.no_grad():
        out = cnn(x)
        assert out.shape == (3, 16)  # average and maximum of the last 8 channels
        torch.testing.assert_close(cnn(x - 0.3), out, atol=1e-5, rtol=1e-5)  # paper and ink levels
        # contrast: exact but for the 0.01 added to the standard deviation (about 0.29 here)
        torch.testing.assert_close(cnn(2.0 * x), out, atol=0.05, rtol=0.05)
    cnn.train()
    assert cnn(x[:1]).shape == (1, 16)  # a batch of one in training (a lone pair) uses the running statistics


def build_text_encoder():
    from engine_linkage.char_ngram import CharNgramEncoder

    return CharNgramEncoder(dim=12, num_buckets=256)


def test_serving_options_rebuild_the_same_features(tmp_path):
    from engine.fields import featurizer_spec

    path = png(tmp_path / "a.png", np.random.default_rng(2).integers(0, 256, size=(10, 40, 3)))
    enc = ImageEncoder(dim=8, channels=3, height=8, width=20, filters=[4, 8])
    spec = featurizer_spec(enc)
    assert spec == {"name": "image", "options": {"channels": 3, "height": 8, "width": 20}}
    again = ImageEncoder.from_config(ImageEncoder.Config(**spec["options"]), dim=1)
    np.testing.assert_array_equal(again.featurize([path, None]), enc.featurize([path, None]))


def test_image_is_the_default_encoder_of_the_image_modality(linkage_plugins):
    from engine.plugins import get_registry

    assert DEFAULT_FIELD_ENCODERS["image"] == "image"
    encoders = build_field_encoders(get_registry(), {"photo": "image", "name": "text"}, {}, dim=8)
    assert isinstance(encoders["image"], ImageEncoder) and encoders["image"].dim == 8
    with pytest.raises(Exception, match="greater than or equal to 8"):
        ImageEncoder.Config(height=4)


def test_resnet18_has_torchvision_layout_and_loads_local_weights(tmp_path):
    from engine_linkage.resnet import ResNet18

    net = ResNet18()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in fc (512 x 1000 + 1000)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512 - 513_000
    keys = set(net.state_dict())
    assert {"conv1.weight", "bn1.num_batches_tracked", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
            "layer4.0.downsample.1.running_var", "layer4.1.bn2.bias"} <= keys
    assert not any(k.startswith("fc.") for k in keys) and "layer1.0.downsample.0.weight" not in keys
    # a checkpoint as saved from DataParallel with a 7-class head: prefixes stripped, the head ignored
    src = ResNet18()
    torch.nn.init.normal_(src.layer3[1].conv1.weight)
    saved = {f"module.{k}": v for k, v in src.state_dict().items()}
    saved.update({"module.fc.weight": torch.zeros(7, 512), "module.fc.bias": torch.zeros(7)})
    torch.save(saved, tmp_path / "r18.pt")
    enc = ImageEncoder(dim=6, backbone="resnet18", channels=1, height=32, width=32,
                       weights=str(tmp_path / "r18.pt")).eval()
    torch.testing.assert_close(enc.backbone.layer3[1].conv1.weight, src.layer3[1].conv1.weight)
    x = torch.rand(3, 1 + 32 * 32)
    x[:, 0] = torch.tensor([1.0, 0.0, 1.0])  # the presence flags
    with torch.no_grad():
        v, present = enc(x)
        # the grayscale image as RGB, ImageNet-normalised, through the trunk, projected
        rgb = x[:, 1:].view(3, 1, 32, 32).repeat(1, 3, 1, 1)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        ref = enc.proj(src.eval()((rgb - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)))
    assert v.shape == (3, 6) and present.tolist() == [True, False, True]
    torch.testing.assert_close(v, ref)


def test_weights_errors(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "part.pt")
    with pytest.raises(ConfigError, match=r"part.pt is not a resnet18 state_dict \(99 missing keys"):
        ImageEncoder(backbone="resnet18", weights=str(tmp_path / "part.pt"))
    torch.save({"conv1.weight": torch.zeros(64, 1, 7, 7)}, tmp_path / "shape.pt")
    with pytest.raises(ConfigError, match=r"shape.pt is not a resnet18 state_dict of this shape \(.*size mismatch"):
        ImageEncoder(backbone="resnet18", weights=str(tmp_path / "shape.pt"))
    with pytest.raises(ConfigError, match="is not a file .*nothing is downloaded"):
        ImageEncoder(backbone="resnet18", weights=str(tmp_path / "none.pt"))
    torch.save(ImageEncoder(filters=[4, 8]).backbone.state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ConfigError, match=r"cnn.pt is not a cnn state_dict of this shape"):
        ImageEncoder(filters=[4, 16], weights=str(tmp_path / "cnn.pt"))


def test_cnn_weights_load(tmp_path):
    src = ImageEncoder(dim=4, height=8, width=16, filters=[4, 8])
    torch.nn.init.normal_(src.backbone.features[0].weight)
    src.backbone.norm.running_mean.fill_(0.5)
    torch.save(src.backbone.state_dict(), tmp_path / "cnn.pt")
    enc = ImageEncoder(dim=6, height=8, width=16, filters=[4, 8], weights=str(tmp_path / "cnn.pt"))
    for key, value in src.backbone.state_dict().items():
        torch.testing.assert_close(enc.backbone.state_dict()[key], value)
    assert enc.proj.out_features == 6  # the projection is the pipeline's own, never loaded


def test_resnet18_equals_torchvision_where_it_imports(tmp_path):
    try:  # the PyPI wheels need CUDA torch: beside a CPU-only torch the import fails (not with ImportError)
        from torchvision.models import resnet18
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torchvision does not import here ({type(exc).__name__})")
    tv = resnet18(weights=None).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    enc = ImageEncoder(dim=4, backbone="resnet18", channels=3, height=32, width=48, weights=str(tmp_path / "tv.pt"))
    tv.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval().backbone(x), tv(x))


def test_no_backbone_needs_torchvision(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # any import of it fails
    assert ImageEncoder(backbone="cnn").dim == 64 and ImageEncoder(backbone="resnet18", dim=8).dim == 8


# -- linkage runs ---------------------------------------------------------------------------------------------------
NAMES = [a + b for a in ("al", "bo", "cy", "de", "ev", "fa", "gu", "ha", "iv", "jo")
         for b in ("n", "rk", "ssa", "t", "mble", "y")]  # 60 names sharing prefixes and suffixes


def scan(path, colour, text: str, shift: int, rng: random.Random) -> None:
    """A 16 x 40 card: a background colour per entity, the name written on it, shifted and speckled."""
    im = Image.new("RGB", (40, 16), tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in colour))
    from PIL import ImageDraw

    ImageDraw.Draw(im).text((2 + shift, 2), text, fill=(0, 0, 0))
    im.save(path)


def write_image_tables(d, n=60, missing=(3,), corrupt=(5,)):
    """tableA / tableB of ``n`` entities (name text + a card image under img/, relative paths), a typo on the
    right; a few right images missing or corrupt; pairs: the match and two others per entity."""
    rng = random.Random(0)
    (d / "img").mkdir(parents=True)
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(n)]
    for side in "ab":
        for i in range(n):
            scan(d / "img" / f"{side}{i}.png", colours[i], NAMES[i], 0 if side == "a" else rng.randint(-1, 1), rng)
    for i in corrupt:
        (d / "img" / f"b{i}.png").write_bytes(b"not a png")
    right_name = [NAMES[i][:-1] + "x" if i % 2 else NAMES[i] for i in range(n)]
    pl.DataFrame({"id": [f"a{i}" for i in range(n)], "name": NAMES[:n],
                  "photo": [f"img/a{i}.png" for i in range(n)]}).write_csv(d / "tableA.csv")
    pl.DataFrame({"id": [f"b{i}" for i in range(n)], "name": right_name,
                  "photo": [None if i in missing else f"img/b{i}.png" for i in range(n)]}).write_csv(d / "tableB.csv")
    order = list(range(n))
    rng.shuffle(order)
    for split, part in (("train", order[: n // 2]), ("valid", order[n // 2: 3 * n // 4]), ("test", order[3 * n // 4:])):
        others = {i: rng.sample([k for k in range(n) if k != i], 2) for i in part}
        rows = [(1, i, i) for i in part] + [(0, i, j) for i in part for j in others[i]]
        pl.DataFrame({"label": [r[0] for r in rows], "left_id": [f"a{r[1]}" for r in rows],
                      "right_id": [f"b{r[2]}" for r in rows]}).write_csv(d / f"{split}.csv")
    return d


def image_pipeline(tmp_path, fields: dict, name: str, **model) -> str:
    doc = {"name": name, "task": "linkage", "seed": 1,
           "data": {"source": "deepmatcher_csv", "path": str(tmp_path / "dm"), "fields": fields},
           "model": {"dim": 16, "fusion": "mean", "blocking_k": 3, **model,
                     "encoders": {"text": {"name": "char_ngram", "num_buckets": 2048, "max_ngrams": 16},
                                  "image": {"name": "image", "channels": 3, "height": 16, "width": 40,
                                            "filters": [8, 16]}}},
           "train": {"epochs": 8, "batch_size": 8, "lr": 0.01, "monitor": "f1", "patience": 8, "num_threads": 1,
                     "checkpoint_dir": str(tmp_path / f"ck-{name}")},
           "evaluate": {"geometry": False}, "tracking": {"enabled": False}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_linkage_with_an_image_field_end_to_end_and_onnx_parity(tmp_path, linkage_plugins):
    from engine.config import load_pipeline
    from engine.run import prepare

    write_image_tables(tmp_path / "dm")
    both = image_pipeline(tmp_path, {"name": "text", "photo": "image"}, "both")
    task, _ = prepare(load_pipeline(both))
    photos = task.data.right.values("photo")
    assert photos[0] == str(tmp_path / "dm" / "img" / "b0.png") and photos[3] is None  # relative to the dataset
    summary = task.data_summary()
    assert (summary["skipped_image_missing"], summary["skipped_image_not_found"], summary["skipped_image_corrupt"]) \
        == (1, 0, 1)
    slot = [s for s in task.slots if s.name == "photo"][0]
    assert (slot.kind, slot.encoder, slot.width) == ("values", "image", 1 + 3 * 16 * 40)

    run("run", both, "--metrics-out", tmp_path / "both.json")
    m = json.loads((tmp_path / "both.json").read_text())
    assert m["f1"] >= 0.8, m
    run("export", both, "-o", tmp_path / "onnx")
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(report["inputs"]) == {"ids", "values"} and report["max_abs_diff"] < 1e-4
    schema = json.loads((tmp_path / "onnx" / "record_schema.json").read_text())
    photo = [f for f in schema["fields"] if f["name"] == "photo"][0]
    assert photo["options"] == {"channels": 3, "height": 16, "width": 40}

    # the image alone links the records too (the card colour is the entity's); its graph takes `values` only
    alone = image_pipeline(tmp_path, {"photo": "image"}, "alone", rerank=None)
    run("run", alone, "--metrics-out", tmp_path / "alone.json")
    m = json.loads((tmp_path / "alone.json").read_text())
    assert m["f1"] >= 0.8, m
    run("export", alone, "-o", tmp_path / "onnx-alone")
    report = json.loads((tmp_path / "onnx-alone" / "export.json").read_text())
    assert set(report["inputs"]) == {"values"} and report["max_abs_diff"] < 1e-4


def test_unknown_modality_names_the_field(tmp_path, linkage_plugins):
    write_image_tables(tmp_path / "dm", n=12)
    p = image_pipeline(tmp_path, {"name": "text", "photo": "picture"}, "bad")
    result = CliRunner().invoke(cli, ["run", p])
    assert result.exit_code == 2
    assert "data.fields.photo" in result.output and "unknown modality 'picture'" in result.output
    assert "multi_categorical" in result.output  # the modalities come from engine.fields.MODALITIES
