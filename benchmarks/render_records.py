"""Render a DeepMatcher-layout dataset or FEBRL 4a x 4b as a multimodal one: one field (or a few) of every record as
a scan-like image file beside its text, the text of one side corrupted as OCR output would be (issue #4, after
CLIPPINGS: Arora et al., `Linking Representations with Multimodal Contrastive Learning
<https://arxiv.org/abs/2304.03464>`_, 2023).

Reads ``SRC`` (``tableA.csv``, ``tableB.csv``, ``{train,valid,test}.csv`` with ``label, left_id, right_id``; plain or
``.gz``) and writes ``OUT`` in the same layout, which ``deepmatcher_csv`` reads:

* ``images/a/<id>.png``, ``images/b/<id>.png``: the ``--field`` value (``name`` by default) of each record, drawn in a
  font drawn from the system's TrueType fonts (DejaVu, found under ``/usr/share/fonts``; PIL's default font when there
  is none) at twice the size, word-wrapped on up to ``--lines`` lines, rotated by up to ``--max-rotation`` degrees,
  blurred, shrunk to ``--height`` x ``--width`` (grayscale), then Gaussian noise and salt-and-pepper specks on a paper
  grey. Left and right images of one product differ in font, ink, paper, angle and noise;
* ``tableA.csv`` / ``tableB.csv``: every column as read, plus ``image`` (the PNG's path, relative to ``OUT``; empty
  where the field is); on the ``--ocr-side`` tables the ``--field`` text is passed through :func:`ocr_noise` at
  ``--ocr-rate`` (OCR-like confusions ``rn``/``m``, ``l``/``1``, ``o``/``0``..., dropped and doubled characters,
  lost or split spaces);
* ``{train,valid,test}.csv``: the labelled pairs, with ``left_<attr>`` / ``right_<attr>`` rebuilt from the new tables;
* ``render.json``: the options, the fonts used and the counts.

``SRC`` may instead be the FEBRL folder (``dataset4a.csv``, ``dataset4b.csv``, ``dataset4_true_links.csv``): then
``OUT`` holds the same three files (cells stripped of FEBRL's blank after each comma), the tables with ``image`` and
the OCR-noised fields, which the ``febrl`` source reads (``dataset: "4"``); the default fields are ``given_name`` and
``surname``, drawn as one line ("given_name surname") in one image, each OCR-noised on its own. Several ``--field``
are drawn the same way in the DeepMatcher layout.

Everything is seeded per record (``--seed``, the side and the id), so the same command writes the same files with the
same fonts and Pillow. The output is derived data: keep it out of git (the default lies under the ignored ``out/``).

    .venv/bin/python benchmarks/render_records.py ../shared/data/em-deepmatcher-csv/Textual/Abt-Buy out/rendered/abt-buy
    .venv/bin/python benchmarks/render_records.py ../shared/data/febrl out/rendered/febrl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SPLITS = ("train", "valid", "test")
FONT_DIRS = ("/usr/share/fonts",)
#: OCR confusions, each way round where it reads both ways (lower case: DeepMatcher's text is lower-cased)
CONFUSIONS = {"rn": ["m"], "m": ["rn"], "l": ["1", "i", "|"], "1": ["l", "i"], "i": ["l", "1"], "o": ["0", "c"],
              "0": ["o"], "e": ["c"], "c": ["e"], "s": ["5"], "5": ["s"], "b": ["6", "h"], "h": ["b"], "g": ["9", "q"],
              "9": ["g"], "u": ["v"], "v": ["u"], "cl": ["d"], "d": ["cl"], "vv": ["w"], "w": ["vv"], "t": ["f"],
              "f": ["t"], "a": ["o"], "2": ["z"], "z": ["2"], "8": ["b"]}


def ocr_noise(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with OCR-like errors: at each position, with probability ``rate``, one of: a confusable substitution
    (two-letter ones first), a dropped character, a doubled character, a dropped or an inserted space."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if rng.random() >= rate:
            out.append(text[i])
            i += 1
            continue
        pair = text[i:i + 2]
        if len(pair) == 2 and pair in CONFUSIONS:
            out.append(rng.choice(CONFUSIONS[pair]))
            i += 2
            continue
        ch, kind = text[i], rng.random()
        if ch in CONFUSIONS and kind < 0.6:
            out.append(rng.choice(CONFUSIONS[ch]))
        elif ch == " ":
            pass  # two words run together
        elif kind < 0.75:
            pass  # a character lost
        elif kind < 0.9:
            out.append(ch + ch)  # a character read twice
        else:
            out.append(ch + " ")  # a word split
        i += 1
    return "".join(out)


def find_fonts(dirs=FONT_DIRS) -> list[str]:
    """The system's DejaVu text faces (regular, bold, oblique, condensed, serif, mono), sorted; [] when none."""
    skip = ("MathTeXGyre", "ExtraLight")
    return sorted(str(p) for d in dirs for p in Path(d).rglob("DejaVu*.ttf") if not any(s in p.name for s in skip))


def load_font(path: str | None, size: int):
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def wrap(text: str, font, width: int, lines: int) -> list[str]:
    """``text`` broken into at most ``lines`` lines that fit ``width`` pixels (the rest is cut, as a cropped scan)."""
    chars = max(4, int(width / max(font.getlength("x"), 1.0)))
    out = textwrap.wrap(text, chars, break_long_words=True) or [""]
    while len(out) > 1 and max(font.getlength(x) for x in out) > width and chars > 4:
        chars -= 1
        out = textwrap.wrap(text, chars, break_long_words=True)
    return out[:lines]


def render(text: str, rng: random.Random, fonts: list[str], height: int, width: int, lines: int,
           max_rotation: float) -> Image.Image:
    """A grayscale ``height x width`` scan-like image of ``text`` (see the module's docstring for the steps)."""
    scale = 2
    big_h, big_w = height * scale, width * scale
    paper, ink = rng.randint(200, 250), rng.randint(0, 70)
    font_path = rng.choice(fonts) if fonts else None
    size = int(big_h / (lines + 0.6) * rng.uniform(0.8, 0.95))
    font = load_font(font_path, size)
    margin = int(big_w * 0.03)
    rows = wrap(text, font, big_w - 2 * margin, lines)
    im = Image.new("L", (big_w, big_h), paper)
    draw = ImageDraw.Draw(im)
    step = big_h / (len(rows) + 0.4)
    for k, row in enumerate(rows):
        x = margin + rng.randint(-margin // 2, margin // 2)
        y = int(step * (k + 0.2)) + rng.randint(-2, 2)
        draw.text((x, y), row, fill=ink, font=font)
    im = im.rotate(rng.uniform(-max_rotation, max_rotation), resample=Image.Resampling.BILINEAR, fillcolor=paper)
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    im = im.resize((width, height), Image.Resampling.BILINEAR)
    nrng = np.random.default_rng(rng.getrandbits(32))
    pixels = np.asarray(im, dtype=np.float32) + nrng.normal(0.0, rng.uniform(3.0, 14.0), (height, width))
    specks = nrng.random((height, width))
    pixels[specks < 0.004] = 0.0
    pixels[specks > 0.996] = 255.0
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="L")


def record_rng(seed: int, what: str, side: str, rid: str) -> random.Random:
    return random.Random(zlib.crc32(f"{seed}|{what}|{side}|{rid}".encode()))


def read_csv(directory: Path, stem: str, strip: bool = False) -> pl.DataFrame:
    """``directory/stem`` (or ``stem.gz``) as strings; ``strip``: header names and cells stripped, '' -> null
    (FEBRL writes a space after each comma)."""
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            df = pl.read_csv(directory / name, infer_schema=False)
            if strip:
                df = df.rename({c: c.strip() for c in df.columns})
                df = df.with_columns(pl.col(c).str.strip_chars() for c in df.columns)
                df = df.with_columns(pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
                                     for c in df.columns)
            return df
    raise SystemExit(f"render_records: {directory}: missing {stem} (or {stem}.gz)")


def layout(src: Path) -> str:
    """``deepmatcher`` (tableA/tableB) or ``febrl`` (dataset4a x dataset4b)."""
    if any((src / n).is_file() for n in ("tableA.csv", "tableA.csv.gz")):
        return "deepmatcher"
    if any((src / n).is_file() for n in ("dataset4a.csv", "dataset4a.csv.gz")):
        return "febrl"
    raise SystemExit(f"render_records: {src}: expected a DeepMatcher folder (tableA.csv, tableB.csv) or the FEBRL "
                     "folder (dataset4a.csv, dataset4b.csv, dataset4_true_links.csv)")


#: per layout: (id column, [(side, table file)], default fields)
LAYOUTS = {"deepmatcher": ("id", [("a", "tableA.csv"), ("b", "tableB.csv")], ["name"]),
           "febrl": ("rec_id", [("a", "dataset4a.csv"), ("b", "dataset4b.csv")], ["given_name", "surname"])}


def joined(values) -> str:
    """Field values as drawn on one scan: joined by a space, missing (None) and empty ones left out."""
    return " ".join(v for v in values if v)


def render_table(df: pl.DataFrame, path: Path, id_column: str, fields: list[str], side: str, out: Path,
                 noisy: bool, ocr_rate: float, seed: int, fonts: list[str], height: int, width: int, lines: int,
                 max_rotation: float) -> tuple[pl.DataFrame, int]:
    """``df`` with the ``fields`` OCR-noised (when ``noisy``) and a column ``image``: the PNG of the ``fields``' values
    (:func:`joined`; no value: no image); also the number of records whose text changed."""
    if id_column not in df.columns or any(f not in df.columns for f in fields):
        raise SystemExit(f"render_records: {path}: needs columns {[id_column, *fields]} (has {df.columns})")
    (out / "images" / side).mkdir(parents=True, exist_ok=True)
    paths: list[str | None] = []
    texts = {f: [] for f in fields}
    for k, rid in enumerate(df[id_column].to_list()):
        values = [df[f][k] for f in fields]
        shown = joined(values)
        if shown:
            rel = f"images/{side}/{rid}.png"
            render(shown, record_rng(seed, "image", side, rid), fonts, height, width, lines,
                   max_rotation).save(out / rel)
            paths.append(rel)
        else:  # nothing to scan: no image either
            paths.append(None)
        for j, (f, value) in enumerate(zip(fields, values)):
            # the first field keeps the random stream it had when one field was rendered
            rng = record_rng(seed, "ocr" if j == 0 else f"ocr|{f}", side, rid)
            texts[f].append(ocr_noise(value, ocr_rate, rng) if noisy and value is not None else value)
    changed = sum(any(texts[f][k] != df[f][k] for f in fields) for k in range(df.height))
    new = df.with_columns(*[pl.Series(f, texts[f], dtype=pl.String) for f in fields],
                          pl.Series("image", paths, dtype=pl.String))
    return new, changed


def render_dataset(src: Path, out: Path, field: str | list[str] | None = None, ocr_side: str = "right",
                   ocr_rate: float = 0.08, seed: int = 0, height: int = 32, width: int = 192, lines: int = 2,
                   max_rotation: float = 2.0, fonts: list[str] | None = None) -> dict:
    """Write the rendered dataset ``out`` from ``src`` (see the module's docstring); return what ``render.json``
    holds."""
    fonts = find_fonts() if fonts is None else fonts
    kind = layout(src)
    id_column, files, default_fields = LAYOUTS[kind]
    fields = default_fields if field is None else [field] if isinstance(field, str) else list(field)
    tables = {}
    counts: dict[str, int] = {}
    for side, stem in files:
        df = read_csv(src, stem, strip=kind == "febrl")
        noisy = ocr_side in ("both", "left" if side == "a" else "right")
        tables[side], changed = render_table(df, src / stem, id_column, fields, side, out, noisy, ocr_rate, seed,
                                             fonts, height, width, lines, max_rotation)
        tables[side].write_csv(out / stem)
        label = Path(stem).stem
        counts[f"{label}_records"], counts[f"{label}_ocr_changed"] = df.height, changed
    if kind == "febrl":
        links = read_csv(src, "dataset4_true_links.csv", strip=True)
        links.write_csv(out / "dataset4_true_links.csv")
        counts["true_links"] = links.height
    else:
        write_pairs(src, out, tables, counts)
    info = {"source": str(src), "layout": kind, "field": fields[0] if len(fields) == 1 else fields,
            "ocr_side": ocr_side, "ocr_rate": ocr_rate, "seed": seed, "height": height, "width": width,
            "lines": lines, "max_rotation": max_rotation, "fonts": [Path(f).name for f in fonts] or ["PIL default"],
            "counts": counts}
    (out / "render.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def write_pairs(src: Path, out: Path, tables: dict[str, pl.DataFrame], counts: dict[str, int]) -> None:
    """DeepMatcher's ``{train,valid,test}.csv``: the labelled pairs with ``left_<attr>`` / ``right_<attr>`` rebuilt
    from the rendered tables."""
    attrs = [c for c in tables["a"].columns if c != "id"]
    for split in SPLITS:
        pairs = read_csv(src, f"{split}.csv").select("label", "left_id", "right_id")
        left = tables["a"].rename({c: f"left_{c}" for c in tables["a"].columns})
        right = tables["b"].rename({c: f"right_{c}" for c in tables["b"].columns})
        full = pairs.join(left, on="left_id", how="left", maintain_order="left")
        full = full.join(right, on="right_id", how="left", maintain_order="left")
        full.select("label", "left_id", *[f"left_{a}" for a in attrs], "right_id",
                    *[f"right_{a}" for a in attrs]).write_csv(out / f"{split}.csv")
        counts[f"{split}_pairs"] = pairs.height


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("src", type=Path, help="a DeepMatcher dataset folder (tableA/tableB) or the FEBRL folder")
    ap.add_argument("out", type=Path, nargs="?", default=Path("out/rendered/abt-buy"),
                    help="the folder to write (default out/rendered/abt-buy)")
    ap.add_argument("--field", action="append", default=None,
                    help="a field rendered and OCR-noised; repeat for several, drawn in one image (default: name; "
                         "FEBRL: given_name and surname)")
    ap.add_argument("--ocr-side", choices=("left", "right", "both", "none"), default="right",
                    help="whose text gets OCR noise (default right: tableB)")
    ap.add_argument("--ocr-rate", type=float, default=0.08, help="per-character error probability (default 0.08)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--lines", type=int, default=2, help="text lines per image at most (default 2)")
    ap.add_argument("--max-rotation", type=float, default=2.0, help="degrees (default 2)")
    args = ap.parse_args(argv)
    if not 0 <= args.ocr_rate <= 1:
        ap.error(f"--ocr-rate must be in [0, 1] (got {args.ocr_rate})")
    info = render_dataset(args.src, args.out, args.field, args.ocr_side, args.ocr_rate, args.seed, args.height,
                          args.width, args.lines, args.max_rotation)
    print(json.dumps(info["counts"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
