"""Font-invariance pretraining of the ``image`` encoder's small CNN, on renders of the train records' text.

A CNN trained from scratch on a few hundred matching pairs of scans memorises them and does not generalise (on the
rendered Abt-Buy: 616 pairs, valid recall@10 at chance). This script gives it something to start from without
labels and without any pretrained download: the ``--field`` text of every record in the ``train`` pairs (the clean
source text, read from the folder ``render.json`` names; valid and test records are not used; on FEBRL the rendered
name fields of the train entities' records) is rendered ``--renders`` times with :func:`render_records.render` (other
seeds than the dataset's images: other fonts, angles, blur and noise), and the CNN learns to give two renders of one
text the same vector (symmetric InfoNCE over batches of ``--batch`` texts, temperature 0.05), the synthetic-text
pretraining of OCR models in small.

The backbone's ``state_dict`` goes to ``--out`` (default ``<rendered>/cnn_pretrained.pt``); a pipeline loads it with
``model.encoders.image.weights`` (same ``channels``, ``height``, ``width`` and ``filters``). Every ``--eval-every``
steps the recall@1 / @10 of the valid matches' real images (left image -> right image among the valid matches) is
printed, and the log goes to ``<out>.json``.

    .venv/bin/python benchmarks/pretrain_image_cnn.py out/rendered/abt-buy --steps 1000
    .venv/bin/python benchmarks/pretrain_image_cnn.py out/rendered/febrl --steps 800
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "linkage"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_linkage.image import ImageEncoder  # noqa: E402
from render_records import find_fonts, joined, read_csv, render  # noqa: E402


def train_texts(source: Path, field: str | list[str]) -> list[str]:
    """The distinct ``field`` values of the records named by the source's train pairs, sorted; on FEBRL, the fields'
    values joined by a space (as ``render_records.py`` draws them) of the train entities' records."""
    if isinstance(field, list):
        data = febrl(source, {f: "text" for f in field})
        out = {joined(table.columns[f][i] for f in field)
               for side, table in (("left", data.left), ("right", data.right))
               for i in np.flatnonzero(data.record_split[side] == 0)}
        return sorted(t for t in out if t)
    pairs = read_csv(source, "train.csv")
    out: set[str] = set()
    for stem, col in (("tableA.csv", "left_id"), ("tableB.csv", "right_id")):
        table = read_csv(source, stem)
        keep = table.filter(pl.col("id").is_in(pairs[col].unique().implode()))
        out.update(v for v in keep[field].to_list() if v)
    return sorted(out)


def febrl(path: Path, fields: dict[str, str]):
    """FEBRL 4a x 4b at ``path`` as the pipelines read it (the ``febrl`` source, same entity split)."""
    from engine_linkage.sources import FebrlSource

    return FebrlSource(str(path), "4", fields=fields).load()


def valid_images(rendered: Path, layout: str) -> tuple[list[str], list[str]]:
    """The image paths of the valid matches, left and right."""
    if layout == "febrl":
        data = febrl(rendered, {"image": "image"})
        pairs = data.pairs["valid"]
        return ([data.left.columns["image"][i] for i in pairs.left],
                [data.right.columns["image"][i] for i in pairs.right])
    valid = read_csv(rendered, "valid.csv").filter(pl.col("label") == "1")
    return tuple([str(rendered / p) for p in valid[c].to_list()] for c in ("left_image", "right_image"))


def recall(encoder: ImageEncoder, left: torch.Tensor, right: torch.Tensor) -> tuple[float, float]:
    """Recall@1 and @10 of ``left[i] -> right[i]`` among all of ``right``, by cosine."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        sim = F.normalize(encoder(left)[0], dim=-1) @ F.normalize(encoder(right)[0], dim=-1).T
    encoder.train(was)
    truth = torch.arange(sim.shape[0])[:, None]
    top = sim.topk(min(10, sim.shape[1]), dim=1).indices
    return float((top[:, :1] == truth).any(1).float().mean()), float((top == truth).any(1).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rendered", type=Path, help="a folder written by render_records.py (its render.json is read)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--renders", type=int, default=4, help="renders per text (>= 2)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.renders < 2:
        ap.error("--renders must be at least 2")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    info = json.loads((args.rendered / "render.json").read_text())
    h, w, field = info["height"], info["width"], info["field"]
    texts = train_texts(Path(info["source"]), field)
    fonts = find_fonts()
    tic = time.perf_counter()
    pool = np.stack([[np.asarray(render(t, random.Random(f"pretrain|{args.seed}|{k}|{i}"), fonts, h, w,
                                        info["lines"], info["max_rotation"])) for k in range(args.renders)]
                     for i, t in enumerate(texts)])  # uint8 [T, K, H, W]
    print(f"{len(texts)} texts x {args.renders} renders in {time.perf_counter() - tic:.0f}s", flush=True)

    encoder = ImageEncoder(dim=64, channels=1, height=h, width=w, filters=args.filters)
    left, right = valid_images(args.rendered, info.get("layout", "deepmatcher"))
    vl, vr = torch.from_numpy(encoder.featurize(left)), torch.from_numpy(encoder.featurize(right))

    def inputs(images: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
        return torch.cat([torch.ones(images.shape[0], 1), pixels], dim=1)

    opt = torch.optim.Adam(encoder.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    log, losses, tic = [], [], time.perf_counter()
    r1, r10 = recall(encoder, vl, vr)
    log.append({"step": 0, "valid_r1": r1, "valid_r10": r10})
    print(json.dumps(log[-1]), flush=True)
    for step in range(1, args.steps + 1):
        idx = rng.choice(len(texts), args.batch, replace=False)
        k1 = rng.integers(0, args.renders, args.batch)
        k2 = (k1 + rng.integers(1, args.renders, args.batch)) % args.renders  # another render of the same text
        u = F.normalize(encoder(inputs(pool[idx, k1]))[0], dim=-1)
        v = F.normalize(encoder(inputs(pool[idx, k2]))[0], dim=-1)
        logits, target = u @ v.T / 0.05, torch.arange(args.batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            r1, r10 = recall(encoder, vl, vr)
            log.append({"step": step, "loss": round(float(np.mean(losses[-args.eval_every:])), 4), "valid_r1": r1,
                        "valid_r10": r10, "seconds": round(time.perf_counter() - tic, 1)})
            print(json.dumps(log[-1]), flush=True)
    out = args.out or args.rendered / "cnn_pretrained.pt"
    torch.save(encoder.backbone.state_dict(), out)
    Path(f"{out}.json").write_text(json.dumps({"texts": len(texts), **vars(args), "rendered": str(args.rendered),
                                               "out": str(out), "log": log}, indent=2, default=str) + "\n")
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
