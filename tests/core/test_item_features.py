"""Item feature tables: the three formats read by hand-written files, the join to internal item ids (unknown rows
skipped and counted, items without a row all missing), the bad-input errors, and finding a table beside the
interactions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.data.item_features import (ItemFeatures, ItemFeaturesConfig, find_item_table, load_item_features,
                                       read_item_table)
from engine.errors import DataError

RECBOLE = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\tprice:float\temb:float_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\t3.5\t0.1 0.2\n"
    "20\tGoldenEye\t1995\tAction Adventure Thriller\t\t0.3 0.4\n"
    "30\tFour Rooms\t\tThriller\t7\t0.5 0.6\n"
)


def write(path: Path, text: str) -> Path:
    raw = text.encode()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def cfg(path=None, **kw) -> ItemFeaturesConfig:
    return ItemFeaturesConfig(path=None if path is None else str(path), **kw)


# -- reading each format ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ml.item", "ml.item.gz"])
def test_read_recbole_item(tmp_path, name):
    key, df, defaults = read_item_table(write(tmp_path / name, RECBOLE))
    assert key == "item_id"
    assert df.columns == ["item_id", "movie_title", "release_year", "genre", "price", "emb"]
    assert all(dtype == pl.String for dtype in df.dtypes)  # values are read as text, typed by the schema
    assert df["item_id"].to_list() == ["10", "20", "30"]
    assert df["release_year"].to_list() == ["1995", "1995", None]  # an empty value is missing
    assert df["price"].to_list() == ["3.5", None, "7"]
    # token -> categorical, token_seq -> multi_categorical, float -> numeric; float_seq is skipped; the id is no field
    assert defaults == {"movie_title": "multi_categorical", "release_year": "categorical",
                        "genre": "multi_categorical", "price": "numeric"}
    key, _, defaults = read_item_table(tmp_path / name, id_field="movie_title")
    assert key == "movie_title" and "item_id" in defaults and "movie_title" not in defaults


def test_read_recbole_item_bad_header_and_short_line(tmp_path):
    with pytest.raises(DataError, match=r"line 1: header field 'genre' is not of the form name:type"):
        read_item_table(write(tmp_path / "a.item", "item_id:token\tgenre\n1\tx\n"))
    with pytest.raises(DataError, match=r"line 3: 1 fields, the header has 2"):
        read_item_table(write(tmp_path / "b.item", "item_id:token\tgenre:token\n1\tx\n2\n"))
    with pytest.raises(DataError, match="the file is empty"):
        read_item_table(write(tmp_path / "c.item", ""))
    with pytest.raises(DataError, match="no such item feature file"):
        read_item_table(tmp_path / "missing.item")


@pytest.mark.parametrize("name", ["Beauty_item2attributes.json", "Beauty_item2attributes.json.gz"])
def test_read_item2attributes_json(tmp_path, name):
    path = write(tmp_path / name, json.dumps({"1": [3, 17, 42], "2": [], "5": ["7"]}))
    key, df, defaults = read_item_table(path)
    assert key == "item" and defaults == {"attributes": "multi_categorical"}
    assert df["item"].to_list() == ["1", "2", "5"]
    assert df["attributes"].to_list() == ["3 17 42", None, "7"]  # no attribute: missing


def test_read_item2attributes_bad_json(tmp_path):
    with pytest.raises(DataError, match=r"not valid JSON .* at line 1"):
        read_item_table(write(tmp_path / "x_item2attributes.json", "{1: [2]"))
    with pytest.raises(DataError, match=r"expected an object \{item_id: \[attribute, ...\]\}"):
        read_item_table(write(tmp_path / "y_item2attributes.json", json.dumps({"1": 3})))


def test_read_csv_tsv_and_parquet(tmp_path):
    frame = pl.DataFrame({"item": [7, 8], "title": ["Heat", "Alien"], "year": [1995, 1979], "score": [4.5, None]})
    csv = tmp_path / "items.csv"
    frame.write_csv(csv)
    tsv = tmp_path / "items.tsv"
    frame.write_csv(tsv, separator="\t")
    parquet = tmp_path / "items.parquet"
    frame.write_parquet(parquet)
    for path in (csv, tsv, parquet):
        key, df, defaults = read_item_table(path)
        assert key == "item", path
        assert defaults == {"title": "text", "year": "numeric", "score": "numeric"}, path
        assert df["title"].to_list() == ["Heat", "Alien"] and df["score"].to_list() == [4.5, None], path
    key, _, defaults = read_item_table(csv, id_field="title")
    assert key == "title" and defaults == {"item": "numeric", "year": "numeric", "score": "numeric"}


# -- joining to the internal items -----------------------------------------------------------------------------------


def test_recbole_rows_align_with_internal_ids_and_unknown_rows_are_counted(tmp_path):
    path = write(tmp_path / "ml.item", RECBOLE + "99\tUnknown Film\t2001\tDrama\t1\t0 0\n")
    # internal item i has the original id item_ids[i]; "40" has no row, "99" is not an item of the interactions
    item_ids = pl.Series("item", ["30", "10", "40", "20"])
    feats = load_item_features(cfg(path), None, item_ids, 4)
    assert isinstance(feats, ItemFeatures) and feats.num_items == 4
    assert feats.fields == {"movie_title": "multi_categorical", "release_year": "categorical",
                            "genre": "multi_categorical", "price": "numeric"}
    assert feats.columns == {
        "movie_title": ["Four Rooms", "Toy Story", None, "GoldenEye"],
        "release_year": [None, "1995", None, "1995"],
        "genre": ["Thriller", "Animation Children's Comedy", None, "Action Adventure Thriller"],
        "price": ["7", "3.5", None, None],
    }
    assert feats.has_row.tolist() == [True, True, False, True]
    assert feats.num_unknown_rows == 1
    assert feats.summary() == {"item_features.path": str(path),
                               "item_features.fields": "movie_title,release_year,genre,price",
                               "item_features.items_with_row": 3, "item_features.items_with_content": 3,
                               "item_features.items_without_row": 1,
                               "item_features.unknown_rows_skipped": 1}


def test_named_fields_override_the_defaults(tmp_path):
    path = write(tmp_path / "ml.item", RECBOLE)
    feats = load_item_features(cfg(path, fields={"movie_title": "text", "emb": "numeric"}), None,
                               pl.Series(["10", "20", "30"]), 3)
    assert feats.fields == {"movie_title": "text", "emb": "numeric"}  # a float_seq field is used when named
    assert feats.columns == {"movie_title": ["Toy Story", "GoldenEye", "Four Rooms"],
                             "emb": ["0.1 0.2", "0.3 0.4", "0.5 0.6"]}


def test_dense_ids_json_and_items_without_a_row(tmp_path):
    """Without ``item_ids`` the original ids are 0..num_items-1; items the table lacks have every field ``None``."""
    path = write(tmp_path / "Sports_item2attributes.json", json.dumps({"0": [5, 6], "2": [], "3": [6], "8": [1]}))
    feats = load_item_features(cfg(path), None, None, 5)
    assert feats.fields == {"attributes": "multi_categorical"}
    assert feats.columns == {"attributes": ["5 6", None, None, "6", None]}
    assert feats.has_row.tolist() == [True, False, True, True, False]  # item 2 has a row (an empty one)
    assert feats.num_unknown_rows == 1  # "8" >= num_items


def test_csv_with_integer_ids_and_blank_values(tmp_path):
    path = write(tmp_path / "items.csv", "item,title,year\n5,Heat,1995\n7,  ,\n6,Alien,1979\n")
    feats = load_item_features(cfg(path), None, pl.Series([5, 6, 7, 9]), 4)  # integer ids match "5", "6", ...
    assert feats.fields == {"title": "text", "year": "numeric"}
    assert feats.columns == {"title": ["Heat", "Alien", None, None], "year": ["1995", "1979", None, None]}
    assert feats.has_row.tolist() == [True, True, True, False]
    assert feats.num_unknown_rows == 0


def test_numeric_field_with_some_text_is_accepted(tmp_path):
    path = write(tmp_path / "items.csv", "item,year\n0,1995\n1,n/a\n2,circa 1979\n")
    feats = load_item_features(cfg(path, fields={"year": "numeric"}), None, None, 3)
    assert feats.columns == {"year": ["1995", "n/a", "circa 1979"]}  # the encoder reads what is a number


# -- bad input -------------------------------------------------------------------------------------------------------


def test_duplicate_ids_are_an_error_naming_them(tmp_path):
    path = write(tmp_path / "items.csv", "item,title\n1,a\n2,b\n1,c\n3,d\n2,e\n1,f\n")
    with pytest.raises(DataError, match=r"duplicated item id\(s\) in column 'item': 1, 2 \(2 in all\)"):
        load_item_features(cfg(path), None, None, 4)
    many = "item,title\n" + "".join(f"{i},x\n{i},y\n" for i in range(7))
    with pytest.raises(DataError, match=r": 0, 1, 2, 3, 4 \.\.\. \(7 in all\)"):
        load_item_features(cfg(write(tmp_path / "many.csv", many)), None, None, 7)
    # a duplicate among rows of unknown items is still an error
    unknown = write(tmp_path / "u.item", "item_id:token\tg:token\n1\ta\n99\tb\n99\tc\n")
    with pytest.raises(DataError, match=r"duplicated item id\(s\) in column 'item_id': 99 \(1 in all\)"):
        load_item_features(cfg(unknown), None, None, 3)


def test_numeric_field_with_only_text_is_an_error(tmp_path):
    path = write(tmp_path / "items.item", "item_id:token\tyear:float\n0\tunknown\n1\t\n2\tn/a\n")
    with pytest.raises(DataError, match=r"field 'year' is declared numeric but none of its 2 values is a number "
                                        r"\(e\.g\. 'unknown'\); declare it text or categorical"):
        load_item_features(cfg(path), None, None, 3)
    # the same column declared categorical is fine
    feats = load_item_features(cfg(path, fields={"year": "categorical"}), None, None, 3)
    assert feats.columns == {"year": ["unknown", None, "n/a"]}


@pytest.mark.parametrize("modality", ["video", "picture", "Text"])
def test_unknown_modality_is_an_error(tmp_path, modality):
    path = write(tmp_path / "items.csv", "item,title\n0,a\n")
    with pytest.raises(DataError, match=rf"data\.item_features\.fields\.title: unknown modality "
                                        rf"'{modality}'; expected one of text, categorical, multi_categorical, "
                                        r"numeric, date, image$"):
        load_item_features(cfg(path, fields={"title": modality}), None, None, 1)


def test_image_paths_are_relative_to_the_table(tmp_path):
    (tmp_path / "meta").mkdir()
    path = write(tmp_path / "meta" / "items.csv", "item,poster\n0,img/0.png\n1,\n2,/abs/2.png\n")
    feats = load_item_features(cfg(path, fields={"poster": "image"}), None, None, 3)
    assert feats.columns == {"poster": [str(tmp_path / "meta" / "img" / "0.png"), None, "/abs/2.png"]}


def test_missing_field_is_an_error_listing_the_fields(tmp_path):
    path = write(tmp_path / "items.csv", "item,title,genre\n0,a,b\n")
    with pytest.raises(DataError, match=r"missing field 'year' named in data\.item_features\.fields "
                                        r"\(fields: title, genre\)"):
        load_item_features(cfg(path, fields={"title": "text", "year": "numeric"}), None, None, 1)
    with pytest.raises(DataError, match=r"missing field 'item'"):  # the id column is not a feature
        load_item_features(cfg(path, fields={"item": "categorical"}), None, None, 1)


def test_missing_id_column_and_missing_ids(tmp_path):
    path = write(tmp_path / "items.csv", "sku,title\n0,a\n")
    with pytest.raises(DataError, match=r"no id column 'item' \(columns: sku, title\); set "
                                        r"data\.item_features\.id_field"):
        load_item_features(cfg(path), None, None, 1)
    feats = load_item_features(cfg(path, id_field="sku"), None, None, 1)
    assert feats.columns == {"title": ["a"]}
    blank = write(tmp_path / "blank.csv", "item,title\n0,a\n,b\n,c\n")
    with pytest.raises(DataError, match=r"2 row\(s\) without an id in column 'item'"):
        load_item_features(cfg(blank), None, None, 1)


def test_no_usable_field(tmp_path):
    path = write(tmp_path / "items.item", "item_id:token\temb:float_seq\n0\t1 2\n")
    with pytest.raises(DataError, match=r"no usable feature field; name them in data\.item_features\.fields"):
        load_item_features(cfg(path), None, None, 1)


# -- finding the table beside the interactions -----------------------------------------------------------------------


def test_find_item_table_beside_recbole_inter(tmp_path):
    inter = write(tmp_path / "ml-100k.inter.gz", "user_id:token\titem_id:token\n1\t10\n")
    item = write(tmp_path / "ml-100k.item", RECBOLE)
    write(tmp_path / "other.item", RECBOLE)
    assert find_item_table(inter) == item
    assert find_item_table(tmp_path / "ml-100k.inter") == item  # the path need not exist itself
    # load_item_features looks there when no path is given
    feats = load_item_features(cfg(), str(inter), pl.Series(["10", "20", "30"]), 3)
    assert feats.path == str(item) and feats.has_row.all()


def test_find_item_table_beside_s3rec_txt(tmp_path):
    txt = write(tmp_path / "Beauty.txt.gz", "1 1 2 3\n")
    attrs = write(tmp_path / "Beauty_item2attributes.json", "{}")
    write(tmp_path / "Sports_item2attributes.json", "{}")
    assert find_item_table(txt) == attrs
    assert find_item_table(tmp_path / "Beauty.txt") == attrs


def test_find_item_table_in_a_directory(tmp_path):
    write(tmp_path / "train.txt", "0 1\n")
    b = write(tmp_path / "b.item", RECBOLE)
    write(tmp_path / "a_item2attributes.json", "{}")
    write(tmp_path / "c.item", RECBOLE)
    assert find_item_table(tmp_path) == b  # .item files first, by name


def test_find_item_table_says_what_it_tried(tmp_path):
    inter = write(tmp_path / "x.inter.gz", "user_id:token\titem_id:token\n")
    with pytest.raises(DataError, match=rf"no feature table found beside {inter} \(tried {tmp_path / 'x.item'}, "
                                        rf"{tmp_path / 'x_item2attributes.json'}\); set data\.item_features\.path"):
        find_item_table(inter)
    with pytest.raises(DataError, match=r"tried \*\.item or \*_item2attributes\.json in "):
        find_item_table(tmp_path)
    with pytest.raises(DataError, match="no feature table found"):
        load_item_features(cfg(), str(inter), None, 1)


def test_config_fields_have_descriptions():
    for name, field in ItemFeaturesConfig.model_fields.items():
        assert field.description, name
    with pytest.raises(Exception, match="extra"):
        ItemFeaturesConfig(pathh="x")
    assert np.array_equal(ItemFeatures("p", {}, {}, np.zeros(3, bool)).has_row, np.zeros(3, bool))
