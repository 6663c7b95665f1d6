import gzip
import hashlib
import time
from pathlib import Path

import polars as pl
import pytest

from engine.data.readers import (
    find_recbole_inter,
    read_interaction_table,
    read_lightgcn_txt,
    read_recbole_atomic,
    sha256_file,
)
from engine.errors import DataError

DATA = Path("/work/shared/data")


def write(path: Path, text: str) -> Path:
    raw = text.encode()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def pairs(df: pl.DataFrame) -> list[tuple]:
    return list(df.iter_rows())


# -- LightGCN txt -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.txt", "train.txt.gz"])
def test_lightgcn_plain_and_gzip(tmp_path, name):
    path = write(tmp_path / name, "0 1 2\n1 0\n2\n3 5 5 7\n")
    df = read_lightgcn_txt(path)
    assert df.schema == pl.Schema({"user": pl.Int64, "item": pl.Int64})
    # user 2 has no items: no rows; duplicates are kept as read
    assert pairs(df) == [(0, 1), (0, 2), (1, 0), (3, 5), (3, 5), (3, 7)]


def test_lightgcn_crlf_trailing_spaces_and_blank_lines(tmp_path):
    path = write(tmp_path / "t.txt", "0 1 2 \r\n1  3\r\n\r\n\n2 4")
    assert pairs(read_lightgcn_txt(path)) == [(0, 1), (0, 2), (1, 3), (2, 4)]


def test_lightgcn_splits_on_newline_only(tmp_path):
    # U+2028 is a line break for str.splitlines but not for this format: it stays inside the token, the line number
    # counts '\n' only, and the message shows the character escaped (so it stays on one line)
    path = write(tmp_path / "t.txt", "0 1\u20282\n1 x\n")
    with pytest.raises(DataError, match=r"line 1, column 3: expected an integer id, got '1\\u20282'"):
        read_lightgcn_txt(path)


def test_lightgcn_empty_file(tmp_path):
    df = read_lightgcn_txt(write(tmp_path / "t.txt", ""))
    assert df.height == 0 and df.columns == ["user", "item"]


@pytest.mark.parametrize(
    "text, line, col, token",
    [
        ("0 1 2\n1 2 x3 4\n", 2, 5, "x3"),
        ("0 1\n\nu2 3\n", 3, 1, "u2"),
        ("0 1\r\n1 2.5\r\n", 2, 3, "2.5"),
    ],
)
def test_lightgcn_bad_token_names_file_line_and_token(tmp_path, text, line, col, token):
    path = write(tmp_path / "bad.txt.gz", text)
    with pytest.raises(DataError) as err:
        read_lightgcn_txt(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and f"line {line}, column {col}" in msg and repr(token) in msg


def test_lightgcn_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt: not found"):
        read_lightgcn_txt(tmp_path / "nope.txt")


def test_lightgcn_corrupt_gzip(tmp_path):
    (tmp_path / "t.txt.gz").write_bytes(b"0 1 2\n")
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_lightgcn_txt(tmp_path / "t.txt.gz")


def test_lightgcn_gowalla_train_is_fast():
    path = DATA / "gowalla" / "train.txt.gz"
    if not path.exists():
        pytest.skip("gowalla data not available")
    start = time.perf_counter()
    df = read_lightgcn_txt(path)
    elapsed = time.perf_counter() - start
    assert df.height == 810_128
    assert df["user"].n_unique() == 29_858 and df["item"].max() == 40_980
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


# -- tables -------------------------------------------------------------------------------------------------------


CSV = "uid,iid,stars,ts\na,x,5,100\nb,x,3,200\na,y,4,300\n"


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_table_csv(tmp_path, name):
    path = write(tmp_path / name, CSV)
    df = read_interaction_table(path, "uid", "iid", rating_col="stars", timestamp_col="ts")
    assert df.schema == pl.Schema({"user": pl.String, "item": pl.String, "rating": pl.Float64, "timestamp": pl.Int64})
    assert pairs(df) == [("a", "x", 5.0, 100), ("b", "x", 3.0, 200), ("a", "y", 4.0, 300)]


def test_table_tsv_and_custom_separator(tmp_path):
    tsv = write(tmp_path / "t.tsv", "user\titem\n1\t10\n2\t20\n")
    df = read_interaction_table(tsv)
    assert df.schema == pl.Schema({"user": pl.Int64, "item": pl.Int64}) and pairs(df) == [(1, 10), (2, 20)]
    semi = write(tmp_path / "t.csv", "user;item\n1;10\n")
    assert pairs(read_interaction_table(semi, separator=";")) == [(1, 10)]


def test_table_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"u": [3, 1], "i": [7, 8], "t": [1.0, 2.0]}).write_parquet(path)
    df = read_interaction_table(path, "u", "i", timestamp_col="t")
    assert df.schema == pl.Schema({"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64})
    assert pairs(df) == [(3, 7, 1), (1, 8, 2)]


def test_table_ids_that_turn_into_strings_late_are_kept(tmp_path):
    # schema inference must see the whole file, not only the first rows
    lines = "\n".join(f"{i},{i}" for i in range(200))
    path = write(tmp_path / "t.csv", f"user,item\n{lines}\nu-x,1\n")
    assert read_interaction_table(path)["user"][-1] == "u-x"


def test_table_missing_column_lists_available(tmp_path):
    path = write(tmp_path / "t.csv", CSV)
    with pytest.raises(DataError, match=r"missing column 'item'; available: uid, iid, stars, ts"):
        read_interaction_table(path, "uid")


def test_table_null_ids_are_counted(tmp_path):
    path = write(tmp_path / "t.csv", "user,item\n1,2\n,3\n4,\n,\n")
    with pytest.raises(DataError, match=r"column 'user' \(user\) has 2 empty value"):
        read_interaction_table(path)


def test_table_bad_rating(tmp_path):
    path = write(tmp_path / "t.csv", "user,item,r\n1,2,4\n1,3,good\n")
    with pytest.raises(DataError, match=r"column 'r', row 2: expected a number, got 'good'"):
        read_interaction_table(path, rating_col="r")


def test_table_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_interaction_table(tmp_path / "none.csv")
    with pytest.raises(DataError, match="unknown table format"):
        read_interaction_table(write(tmp_path / "t.json", "{}"))


# -- RecBole atomic -----------------------------------------------------------------------------------------------


INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
    "196\t242\t3\t881250949\r\n"
    "186\t302\t3.5\t891717742.0\r\n"
)


@pytest.mark.parametrize("name", ["x.inter", "x.inter.gz"])
def test_recbole_file_and_directory(tmp_path, name):
    path = write(tmp_path / name, INTER)
    for where in (path, tmp_path):
        df = read_recbole_atomic(where)
        assert df.schema == pl.Schema(
            {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
        )
        assert pairs(df) == [(196, 242, 3.0, 881250949), (186, 302, 3.5, 891717742)]


def test_recbole_token_ids_stay_text_when_not_integers(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id:token\textra:token_seq\nu1\t7\ta b\nu2\t8\tc\n")
    df = read_recbole_atomic(path)
    assert df.columns == ["user", "item"] and df["user"].dtype == pl.String and df["item"].dtype == pl.Int64


def test_recbole_errors(tmp_path):
    with pytest.raises(DataError, match="expected exactly one .* found no; files: a.txt"):
        write(tmp_path / "a.txt", "")
        read_recbole_atomic(tmp_path)
    write(tmp_path / "a.inter", INTER)
    write(tmp_path / "b.inter.gz", INTER)
    with pytest.raises(DataError, match="found 2"):
        find_recbole_inter(tmp_path)
    bad = write(tmp_path / "bad.inter", "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"line 1: header field 'user_id' is not of the form name:type"):
        read_recbole_atomic(bad)
    no_item = write(tmp_path / "n.inter", "user_id:token\trating:float\n1\t2\n")
    with pytest.raises(DataError, match=r"missing field 'item_id'; available: user_id, rating"):
        read_recbole_atomic(no_item)


def test_recbole_ml100k():
    path = DATA / "ml-100k"
    if not path.exists():
        pytest.skip("ml-100k data not available")
    df = read_recbole_atomic(path)
    assert df.height == 100_000 and df["user"].n_unique() == 943 and df["item"].n_unique() == 1682
    assert df.row(0) == (196, 242, 3.0, 881250949)


def test_sha256_file(tmp_path):
    path = write(tmp_path / "x.bin", "hello")
    assert sha256_file(path) == hashlib.sha256(b"hello").hexdigest()
