"""Readers on small temp files: every layout, missing values, and bad input (one-line DataError naming the file)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from engine.errors import DataError
from engine_linkage.sources import (DeepMatcherCsvSource, DittoTxtSource, FebrlSource, RecordTablesSource,
                                    parse_ditto_record)

PAIRS = {
    "train": "label,left_id,left_name,left_city,right_id,right_name,right_city\n"
             "1,a1,john smith,paris,b1,jon smith,paris\n0,a1,john smith,paris,b2,mary brown,\n"
             "1,a2,mary brown,,b2,mary brown,\n",
    "valid": "label,left_id,left_name,left_city,right_id,right_name,right_city\n1,a2,mary brown,,b2,mary brown,\n",
    "test": "label,left_id,left_name,left_city,right_id,right_name,right_city\n0,a2,mary brown,,b1,jon smith,paris\n",
}


def write_deepmatcher(d, tables=True, **override):
    d.mkdir(parents=True, exist_ok=True)
    files = {"tableA.csv": "id,name,city\na1,john smith,paris\na2,mary brown,\n",
             "tableB.csv": "id,name,city\nb1,jon smith,paris\nb2,mary brown,\n",
             **{f"{s}.csv": t for s, t in PAIRS.items()}}
    if not tables:
        files = {k: v for k, v in files.items() if not k.startswith("table")}
    files.update(override)
    for name, text in files.items():
        if text is None:
            continue
        if name.endswith(".gz"):
            (d / name).write_bytes(gzip.compress(text.encode()))
        else:
            (d / name).write_text(text)
    return d


def test_deepmatcher_with_tables(tmp_path):
    data = DeepMatcherCsvSource(str(write_deepmatcher(tmp_path / "dm"))).load()
    assert data.full_tables and data.fields == {"name": "text", "city": "text"}
    assert data.left.ids == ["a1", "a2"] and data.right.ids == ["b1", "b2"]
    assert data.left.values("city") == ["paris", None]  # a missing value is None, not an error
    tr = data.pairs["train"]
    assert tr.left.tolist() == [0, 0, 1] and tr.right.tolist() == [0, 1, 1] and tr.label.tolist() == [1, 0, 1]


def test_deepmatcher_gzip_pairs_and_schema(tmp_path):
    d = write_deepmatcher(tmp_path / "dm", **{"train.csv": None, "train.csv.gz": PAIRS["train"]})
    data = DeepMatcherCsvSource(str(d), fields={"name": "text", "city": "categorical"}).load()
    assert data.fields == {"name": "text", "city": "categorical"} and len(data.pairs["train"]) == 3


def test_deepmatcher_without_tables_rebuilds_records(tmp_path):
    data = DeepMatcherCsvSource(str(write_deepmatcher(tmp_path / "dm", tables=False))).load()
    assert not data.full_tables
    assert data.left.ids == ["a1", "a2"] and data.right.ids == ["b1", "b2"]
    assert data.right.values("name") == ["jon smith", "mary brown"]


@pytest.mark.parametrize("override, message", [
    ({"tableA.csv": "id,name\na1,x\n"}, "tableA.csv: missing column 'city'"),
    ({"tableA.csv": "id,name,city\n"}, "tableA.csv: empty table"),
    ({"tableB.csv": "id,name,city\nb1,x,y\nb1,z,w\nb2,q,r\n"}, "tableB.csv: column 'id': duplicate id 'b1'"),
    ({"valid.csv": "label,left_id,right_id\n1,a9,b1\n"}, "valid.csv: column 'left_id': id 'a9' is not in tableA.csv"),
    ({"test.csv": "label,left_id,right_id\n2,a1,b1\n"}, "test.csv: column 'label': expected 0 or 1, got '2'"),
    ({"test.csv": "left_id,right_id\na1,b1\n"}, "test.csv: missing column 'label'"),
    ({"valid.csv": None}, "missing valid.csv"),
    ({"train.csv": "label,left_id,right_id\n0,a1,b1\n"}, "the train split has fewer than 2 matching pairs"),
])
def test_deepmatcher_bad_input(tmp_path, override, message):
    d = write_deepmatcher(tmp_path / "dm")
    for name, text in override.items():
        if text is None:
            (d / name).unlink()
        else:
            (d / name).write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        DeepMatcherCsvSource(str(d)).load()
    assert "\n" not in str(err.value)


def test_unknown_modality_and_schema_column(tmp_path):
    d = write_deepmatcher(tmp_path / "dm")
    with pytest.raises(DataError, match="unknown modality 'audio'"):
        DeepMatcherCsvSource(str(d), fields={"name": "audio"}).load()
    with pytest.raises(DataError, match="missing column 'phone' named in the schema"):
        DeepMatcherCsvSource(str(d), fields={"phone": "text"}).load()


def test_record_tables_dedup(tmp_path):
    (tmp_path / "people.csv").write_text("id,name\n1,ann\n2,anne\n3,bob\n")
    for s, rows in {"train": "1,2,1\n2,3,1\n", "valid": "1,3,0\n2,1,1\n", "test": "2,3,0\n"}.items():
        (tmp_path / f"{s}.csv").write_text("left_id,right_id,label\n" + rows)
    data = RecordTablesSource(str(tmp_path), left="people.csv", right=None).load()
    assert data.dedup and data.right_table is data.left
    assert data.pairs["valid"].left.tolist() == [0, 1] and data.pairs["valid"].right.tolist() == [2, 0]


def test_ditto(tmp_path):
    line = "COL name VAL john  smith COL city VAL paris\tCOL name VAL jon smith COL city VAL \t{}\n"
    for s, label in (("train", 1), ("valid", 0), ("test", 1)):
        (tmp_path / f"{s}.txt").write_text(line.format(label) * (2 if s == "train" else 1))
    data = DittoTxtSource(str(tmp_path)).load()
    assert data.fields == {"name": "text", "city": "text"}
    assert len(data.left) == 1 and data.right.values("city") == [None]
    assert parse_ditto_record("COL a VAL x y COL b VAL z") == {"a": "x y", "b": "z"}
    (tmp_path / "test.txt").write_text("COL name VAL x\t1\n")
    with pytest.raises(DataError, match=r"test.txt: line 1: expected 'left<TAB>right<TAB>label'"):
        DittoTxtSource(str(tmp_path)).load()


FEBRL_A = "rec_id, given_name, surname\nrec-0-org, ann, lee\nrec-1-org, bob, ray\nrec-2-org, cat, fox\n" \
          "rec-3-org, dan, oak\nrec-4-org, eve, elm\n"
FEBRL_B = "rec_id, given_name, surname\nrec-0-dup-0, anne, lee\nrec-1-dup-0, bob, rey\nrec-2-dup-0, kat, fox\n" \
          "rec-3-dup-0, dan, oaks\nrec-4-dup-0, eve, ellm\n"


def write_febrl(d, links="rec_id_4a,rec_id_4b\n" + "".join(f"rec-{i}-org,rec-{i}-dup-0\n" for i in range(5))):
    d.mkdir(parents=True, exist_ok=True)
    (d / "dataset4a.csv").write_text(FEBRL_A)
    (d / "dataset4b.csv").write_text(FEBRL_B)
    (d / "dataset4_true_links.csv").write_text(links)
    return d


def test_febrl_linkage_split_by_entity(tmp_path):
    data = FebrlSource(str(write_febrl(tmp_path)), split=(0.6, 0.2, 0.2)).load()
    assert data.protocol == "links" and data.left.values("given_name")[0] == "ann"  # ", " separators stripped
    assert data.left.entity.tolist() == [0, 1, 2, 3, 4]
    sizes = [len(data.pairs[s]) for s in ("train", "valid", "test")]
    assert sizes == [3, 1, 1]
    for s in ("train", "valid", "test"):
        lrows, rrows = data.split_records(s)
        p = data.pairs[s]
        assert set(p.left.tolist()) <= set(lrows.tolist()) and set(p.right.tolist()) <= set(rrows.tolist())
        assert (data.left.entity[p.left] == data.right.entity[p.right]).all()


def test_febrl_dedup(tmp_path):
    recs = [f"rec-{e}-{k}" for e in range(3) for k in ("org", "dup-0", "dup-1")]
    (tmp_path / "dataset3.csv").write_text("rec_id, name\n" + "".join(f"{r}, n{i}\n" for i, r in enumerate(recs)))
    links = [(f"rec-{e}-{a}", f"rec-{e}-{b}") for e in range(3)
             for a, b in (("dup-0", "org"), ("org", "dup-1"), ("dup-0", "dup-1"))]  # either order
    (tmp_path / "dataset3_true_links.csv").write_text("rec_id_1,rec_id_2\n" + "".join(f"{a},{b}\n" for a, b in links))
    data = FebrlSource(str(tmp_path), dataset="3", split=(0.34, 0.33, 0.33)).load()
    assert data.dedup
    allp = np.concatenate([np.stack([data.pairs[s].left, data.pairs[s].right], 1) for s in data.pairs])
    assert (allp[:, 0] < allp[:, 1]).all() and len(allp) == 9
    assert [len(data.pairs[s]) for s in data.pairs] == [3, 3, 3]


def test_febrl_bad_input(tmp_path):
    d = write_febrl(tmp_path / "a", links="rec_id_4a,rec_id_4b\nrec-0-org,rec-9-dup-0\n")
    with pytest.raises(DataError, match="dataset4_true_links.csv: column 'rec_id_4b': id 'rec-9-dup-0' is not in "
                                        "dataset4b.csv"):
        FebrlSource(str(d)).load()
    d = write_febrl(tmp_path / "b")
    (d / "dataset4a.csv").write_text("rec_id, name\nperson-1, x\n")
    with pytest.raises(DataError, match="dataset4a.csv: line 2: column 'rec_id': expected rec-<entity>-org"):
        FebrlSource(str(d)).load()
    with pytest.raises(DataError, match="must be the febrl folder"):
        FebrlSource(str(tmp_path / "nowhere")).load()
