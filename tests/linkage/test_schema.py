"""Linkage schema inference (``data.fields`` omitted or ``auto``): the rule of :mod:`engine_linkage.schema` against
hand-built columns with the schema worked out by hand, its edge cases, and the sources that apply it."""

from __future__ import annotations

import pytest

from engine.errors import DataError
from engine_linkage import schema
from engine_linkage.schema import infer_fields, infer_modality
from engine_linkage.sources import DeepMatcherCsvSource, DittoTxtSource, RecordTablesSource

# 20 records (the rule applied without its minimum of records, min_records=0). Each column's expected modality,
# worked out by the rule (module docstring):
COLUMNS = {
    # 20 distinct strings of 5 words: not numbers, not repeated (20 values < 5 x 20 distinct) -> text
    "title": [f"acme widget model {i} deluxe edition" for i in range(20)],
    # 18 values (2 missing), all numbers alone: "$12.99", "$ 5" (currency), "1,299.00" (thousands), "15%"
    "price": ["$12.99", "$ 5", "1,299.00", "7.5", "15%", None, "3", "4.25", "$0.99", "10",
              "11", "12.5", "13", "14", "15", "16", "17", None, "19.95", "20"],
    # integers, 3 distinct of 20 (not over half): a quantity -> numeric
    "year": ["1999", "2001", "2003", "1999", "2001"] * 4,
    # integers, 20 distinct of 20: a code -> text
    "sku": [str(100 + 7 * i) for i in range(20)],
    # integers with a leading zero: a code -> text (even though only 2 distinct)
    "zip": ["02134", "10001"] * 10,
    # 2 distinct short values, 20 >= 5 x 2, 1 word: categorical
    "brand": ["acme", "globex"] * 10,
    # high-cardinality short strings (1 word, 20 distinct of 20): not repeated enough -> text
    "maker": [f"mk{i}x" for i in range(20)],
    # 11 distinct short values of 20: 20 < 5 x 11 -> text
    "colour": [f"c{i % 11}" for i in range(20)],
    # 2 distinct values but 6 words on average: not short -> text
    "slogan": ["the best widget in town ever", "quality you can trust every day"] * 10,
    # image file names (any case of extension) -> image
    "photo": [f"img/{i}.PNG" if i % 2 else f"img/{i}.jpg" for i in range(20)],
    # placeholders ("-", "n/a") are missing values: the rest are numbers -> numeric
    "abv": ["-", "n/a", "5.2 %", "4.5 %", "6 %"] * 4,
    # times "3:45" are not numbers alone -> text
    "length": [f"{i % 6}:{10 + i}" for i in range(20)],
    "empty": [None] * 20,  # no value anywhere: left out
    "label": ["0", "1"] * 10,  # left out by name
    "entity_id": [str(i // 2) for i in range(20)],  # left out by name (the truth, not a field)
}
EXPECTED = {"title": "text", "price": "numeric", "year": "numeric", "sku": "text", "zip": "text",
            "brand": "categorical", "maker": "text", "colour": "text", "slogan": "text", "photo": "image",
            "abv": "numeric", "length": "text"}


def test_infer_fields_hand_built_columns():
    inferred = infer_fields(COLUMNS, "t.csv", min_records=0)
    assert inferred.fields == EXPECTED
    assert list(inferred.fields) == list(EXPECTED)  # column order kept
    assert inferred.left_out == {"empty": "no value", "label": "an id or label column",
                                 "entity_id": "an id or label column"}
    line = inferred.describe()
    assert line.startswith("title: text, price: numeric, year: numeric")
    assert "left out: empty (no value), label (an id or label column)" in line


@pytest.mark.parametrize("values, modality", [
    (["1.5", "2.5", "3.5", "4.5", "5.5", "6.5", "7.5", "8.5", "9.5", "x"], "numeric"),  # 9 of 10: the 90% share
    (["1", "2", "3", "4", "5", "6", "7", "8", "9", "x"], "text"),  # 9 of 10, but distinct integers: codes
    (["1.5", "2.5", "3.5", "4.5", "5.5", "6.5", "7.5", "8.5", "x", "y"], "text"),  # 8 of 10: not numeric
    (["1.5", "2.5", "3.5"], "numeric"),  # decimals are never codes, however distinct
    (["1", "2", "3"], "text"),  # distinct integers: codes
    (["1", "1", "2", "2"], "numeric"),  # 2 distinct integers of 4: not over half
    (["1999.0", "1999.0", "2001.0", "2001.0"], "numeric"),  # a float-written integer year
    (["-3.5e2", "+4", "1e3"], "numeric"),
    (["$12.99", "$12.99", "$ 1,299"], "numeric"),
    (["12 kg", "13 kg", "12 kg", "13 kg"], "text"),  # a unit after the number: not a number alone
    ([None, "  ", "-", "n/a", "NULL"], None),  # only placeholders and blanks: no value
    (["a"] * 5, "categorical"),  # 1 distinct, 5 values: 5 x 1
    (["a"] * 4, "text"),  # 4 values < 5 x 1: too few to call it a vocabulary
])
def test_infer_modality_edges(values, modality):
    assert infer_modality(values, min_records=0) == modality


def test_fewer_records_than_the_minimum_are_text():
    """Below MIN_RECORDS records (all tables together), numeric and categorical columns are text; image stays."""
    assert schema.MIN_RECORDS == 1000
    fewer = infer_fields(COLUMNS, "t.csv")  # 20 records
    assert fewer.fields == {**{f: "text" for f in EXPECTED}, "photo": "image"}
    numbers, brands = ["1.5", "2.5"] * 500, ["acme", "globex"] * 500  # 1,000 records: the rule applies
    assert infer_modality(numbers) == "numeric" and infer_modality(brands) == "categorical"
    assert infer_modality(numbers[:-1]) == "text" and infer_modality(brands[:-1]) == "text"
    assert infer_modality([*numbers[:-1], None]) == "numeric"  # records count, missing values included


def test_no_usable_column_names_file_and_columns():
    with pytest.raises(DataError) as err:
        infer_fields({"label": ["0", "1"], "notes": [None, None]}, "data/left.csv, data/right.csv")
    msg = str(err.value)
    assert msg.startswith("data/left.csv, data/right.csv: no column usable as a field")
    assert "label (an id or label column), notes (no value)" in msg and "data.fields" in msg


# -- the sources apply it -------------------------------------------------------------------------------------------

@pytest.fixture
def any_size(monkeypatch):
    """The rule on tables of any size (MIN_RECORDS 0), so small tables show every modality."""
    monkeypatch.setattr(schema, "MIN_RECORDS", 0)

def _rows(n):
    """n records: name (text), brand (2 values: categorical), price (numeric), code (integers with a leading zero:
    text), notes (empty: left out), label (left out)."""
    return [(f"r{i}", f"product number {i} deluxe", "acme" if i % 2 else "globex", f"{i}.99", f"0{1000 + i}", "",
             str(i % 2)) for i in range(n)]


HEADER = "id,name,brand,price,code,notes,label\n"
AUTO_SCHEMA = {"name": "text", "brand": "categorical", "price": "numeric", "code": "text"}


def write_tables(d, n=12):
    d.mkdir(parents=True, exist_ok=True)
    for side, prefix in (("left", "a"), ("right", "b")):
        (d / f"{side}.csv").write_text(HEADER + "".join(",".join((prefix + r[0][1:],) + r[1:]) + "\n"
                                                        for r in _rows(n)))
    pairs = "left_id,right_id,label\n" + "".join(f"a{i},b{i},1\na{i},b{(i + 1) % n},0\n" for i in range(n))
    for s in ("train", "valid", "test"):
        (d / f"{s}.csv").write_text(pairs)
    return d


@pytest.mark.parametrize("fields", [None, "auto"])
def test_record_tables_infers(tmp_path, any_size, fields):
    data = RecordTablesSource(str(write_tables(tmp_path / "rt")), fields=fields).load()
    assert data.fields == AUTO_SCHEMA
    assert set(data.left.columns) == set(data.right.columns) == set(AUTO_SCHEMA)  # left-out columns dropped
    assert data.inferred.left_out == {"notes": "no value", "label": "an id or label column"}
    summary = data.summary()
    assert summary["fields_inferred"] is True and summary["fields_left_out"]["notes"] == "no value"


def test_record_tables_explicit_schema_wins(tmp_path):
    data = RecordTablesSource(str(write_tables(tmp_path / "rt")), fields={"brand": "text", "price": "text"}).load()
    assert data.fields == {"brand": "text", "price": "text"} and data.inferred is None
    assert data.summary()["fields_inferred"] is False


def test_record_tables_dedup_infers_from_left(tmp_path, any_size):
    d = write_tables(tmp_path / "rt")
    for s in ("train", "valid", "test"):
        (d / f"{s}.csv").write_text("left_id,right_id,label\na0,a1,1\na2,a3,1\na0,a2,0\n")
    data = RecordTablesSource(str(d), right=None, fields="auto").load()
    assert data.dedup and data.fields == AUTO_SCHEMA


def test_record_tables_only_id_and_label_is_an_error(tmp_path):
    d = tmp_path / "rt"
    d.mkdir()
    for side in ("left", "right"):
        (d / f"{side}.csv").write_text("id,label,notes\nx1,1,\nx2,0,\n")
    with pytest.raises(DataError, match=r"left\.csv, .*right\.csv: no column usable as a field .*"
                                         r"label \(an id or label column\), notes \(no value\)"):
        RecordTablesSource(str(d)).load()


def _deepmatcher(d, n=12, tables=True):
    d.mkdir(parents=True, exist_ok=True)
    attrs = ["name", "brand", "price", "code", "notes"]
    rows = {r[0]: r[1:6] for r in _rows(n)}
    if tables:
        for t, prefix in (("tableA", "a"), ("tableB", "b")):
            (d / f"{t}.csv").write_text("id," + ",".join(attrs) + "\n" + "".join(
                f"{prefix}{k[1:]}," + ",".join(v) + "\n" for k, v in rows.items()))
    head = "label,left_id," + ",".join(f"left_{a}" for a in attrs) + ",right_id," + \
        ",".join(f"right_{a}" for a in attrs) + "\n"
    body = "".join(f"{y},a{i}," + ",".join(rows[f"r{i}"]) + f",b{j}," + ",".join(rows[f"r{j}"]) + "\n"
                   for i in range(n) for j, y in ((i, 1), ((i + 1) % n, 0)))
    for s in ("train", "valid", "test"):
        (d / f"{s}.csv").write_text(head + body)
    return d


@pytest.mark.parametrize("tables", [True, False])
def test_deepmatcher_infers_with_and_without_tables(tmp_path, any_size, tables):
    data = DeepMatcherCsvSource(str(_deepmatcher(tmp_path / "dm", tables=tables)), fields="auto").load()
    assert data.full_tables is tables
    assert data.fields == AUTO_SCHEMA and data.inferred.left_out == {"notes": "no value"}


def test_deepmatcher_explicit_schema_wins(tmp_path):
    data = DeepMatcherCsvSource(str(_deepmatcher(tmp_path / "dm")), fields={"name": "text"}).load()
    assert data.fields == {"name": "text"} and data.inferred is None


def test_ditto_infers(tmp_path, any_size):
    d = tmp_path / "ditto"
    d.mkdir()
    recs = [f"COL name VAL product number {i} deluxe COL brand VAL {'acme' if i % 2 else 'globex'} "
            f"COL abv VAL {'-' if i % 4 == 0 else f'{i}.5 %'}" for i in range(12)]
    lines = "".join(f"{recs[i]}\t{recs[i]}\t1\n{recs[i]}\t{recs[(i + 1) % 12]}\t0\n" for i in range(12))
    for s in ("train", "valid", "test"):
        (d / f"{s}.txt").write_text(lines)
    data = DittoTxtSource(str(d)).load()
    assert data.fields == {"name": "text", "brand": "categorical", "abv": "numeric"}
