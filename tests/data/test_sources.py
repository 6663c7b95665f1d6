import gzip
import hashlib
from pathlib import Path

import polars as pl
import pytest

from engine.data import InteractionData
from engine.data.sources import InteractionsSource, LightGCNTxtSource, RecBoleAtomicSource, SplitConfig
from engine.errors import ConfigError, DataError
from engine.plugins import get_registry

DATA = Path("/work/shared/data")


def write(path: Path, text: str) -> Path:
    raw = text.encode()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- registration -------------------------------------------------------------------------------------------------


def test_register_data_sources():
    registry = get_registry()
    for name, cls in [
        ("lightgcn_txt", LightGCNTxtSource),
        ("interactions", InteractionsSource),
        ("recbole_atomic", RecBoleAtomicSource),
    ]:
        entry = registry.get("data_source", name)
        assert entry.cls is cls and entry.plugin == "engine.data.sources"
        for field_name, field in cls.Config.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"


def test_configs_validate_and_build():
    registry = get_registry()
    cfg = registry.validate("data_source", "interactions", {"path": "x.csv", "split": {"strategy": "temporal"}}, "data")
    src = registry.build("data_source", "interactions", cfg)
    assert isinstance(src, InteractionsSource) and src.split == SplitConfig(strategy="temporal")
    with pytest.raises(ConfigError, match="data.split.ratios: .*sum to 1"):
        registry.validate("data_source", "interactions", {"path": "x", "split": {"ratios": [0.5, 0.6]}}, "data")
    with pytest.raises(ConfigError, match="data.split.strategy"):
        registry.validate("data_source", "recbole_atomic", {"path": "x", "split": {"strategy": "rand"}}, "data")
    with pytest.raises(ConfigError, match="data.user_col: unknown key"):
        registry.validate("data_source", "recbole_atomic", {"path": "x", "user_col": "u"}, "data")
    with pytest.raises(ConfigError, match="valid_from_train is true but no valid file"):
        registry.validate("data_source", "lightgcn_txt", {"path": "x", "valid_from_train": True}, "data")


# -- lightgcn_txt -------------------------------------------------------------------------------------------------


@pytest.fixture
def lightgcn_dir(tmp_path):
    write(tmp_path / "train.txt.gz", "0 0 1 2\n1 1 3\n2 2\n")
    write(tmp_path / "valid.txt", "0 2\n1 3\n")
    write(tmp_path / "test.txt", "0 4\r\n1 0\r\n2 5\r\n")
    return tmp_path


def test_lightgcn_txt_end_to_end(lightgcn_dir):
    data = LightGCNTxtSource(path=str(lightgcn_dir)).load()
    assert isinstance(data, InteractionData)
    assert data.summary()["num_train"] == 6 and data.valid is None and data.test.height == 3
    assert (data.num_users, data.num_items) == (3, 6)  # item 5 only in test still counts
    assert data.user_ids is None and data.item_ids is None
    train_gz = lightgcn_dir / "train.txt.gz"
    test = lightgcn_dir / "test.txt"
    assert data.checksums == {str(train_gz): sha(train_gz), str(test): sha(test)}


def test_lightgcn_txt_valid_from_train(lightgcn_dir):
    kept = LightGCNTxtSource(path=str(lightgcn_dir), valid="valid.txt").load()
    assert kept.train.height == 6 and kept.valid.rows() == [(0, 2), (1, 3)]
    removed = LightGCNTxtSource(path=str(lightgcn_dir), valid="valid.txt.gz", valid_from_train=True).load()
    assert removed.train.rows() == [(0, 0), (0, 1), (1, 1), (2, 2)]
    assert len(removed.checksums) == 3


def test_lightgcn_txt_missing_file_lists_directory(lightgcn_dir):
    listing = r"no file 'tst.txt' or 'tst.txt.gz'; files there: test.txt, train.txt.gz, valid.txt"
    with pytest.raises(DataError, match=listing):
        LightGCNTxtSource(path=str(lightgcn_dir), test="tst.txt").load()
    with pytest.raises(DataError, match="not a directory"):
        LightGCNTxtSource(path=str(lightgcn_dir / "nothing")).load()


def test_lightgcn_txt_non_integer_ids(lightgcn_dir):
    write(lightgcn_dir / "test.txt", "0 4\n1 item7\n")
    with pytest.raises(DataError, match=r"test.txt: line 2, column 3: expected an integer id, got 'item7'"):
        LightGCNTxtSource(path=str(lightgcn_dir)).load()


def test_lightgcn_txt_negative_ids(lightgcn_dir):
    write(lightgcn_dir / "test.txt", "0 -4\n")
    with pytest.raises(DataError, match="test split: item ids must be >= 0"):
        LightGCNTxtSource(path=str(lightgcn_dir)).load()


def test_lightgcn_txt_empty_splits(lightgcn_dir):
    write(lightgcn_dir / "test.txt", "0\n1\n")  # users without items: no test interactions
    with pytest.raises(DataError, match="empty test split after reading .*; check"):
        LightGCNTxtSource(path=str(lightgcn_dir)).load()
    write(lightgcn_dir / "test.txt", "0 1\n")
    write(lightgcn_dir / "valid.txt", "0 0 1 2\n1 1 3\n2 2\n")  # all of train
    with pytest.raises(DataError, match="empty train split"):
        LightGCNTxtSource(path=str(lightgcn_dir), valid="valid.txt", valid_from_train=True).load()


@pytest.mark.parametrize(
    "folder, kwargs, expected",
    [
        ("gowalla", {}, (29_858, 40_981, 810_128, 0, 217_242)),
        (
            "gowalla",
            {"valid": "valid_lightgcnpp.txt", "valid_from_train": True},
            (29_858, 40_981, 719_081, 91_047, 217_242),
        ),
        ("ml-1m-lightgcnpp", {"valid": "valid.txt"}, (6_039, 3_628, 590_733, 80_897, 164_848)),
    ],
)
def test_lightgcn_txt_real_data(folder, kwargs, expected):
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    s = LightGCNTxtSource(path=str(path), **kwargs).load().summary()
    assert (s["num_users"], s["num_items"], s["num_train"], s["num_valid"], s["num_test"]) == expected


# -- interactions / recbole_atomic --------------------------------------------------------------------------------


def table_rows():
    # users a (4 interactions, one repeated), b (3), c (1, dropped by the 2-core); rating 2 rows drop at threshold 3
    return [
        ("a", "x", 5, 1), ("a", "y", 4, 2), ("a", "z", 3, 3), ("a", "w", 5, 4), ("a", "x", 1, 0),
        ("b", "x", 4, 5), ("b", "y", 5, 6), ("b", "z", 4, 7), ("b", "w", 2, 8),
        ("c", "x", 5, 9),
    ]  # fmt: skip


def test_interactions_end_to_end(tmp_path):
    path = tmp_path / "t.csv"
    pl.DataFrame(table_rows(), schema=["uid", "iid", "stars", "ts"], orient="row").write_csv(path)
    src = InteractionsSource(
        path=str(path),
        user_col="uid",
        item_col="iid",
        rating_col="stars",
        timestamp_col="ts",
        rating_threshold=3,
        user_k=2,
        item_k=2,
        split={"strategy": "leave_one_out"},
    )
    data = src.load()
    # dedupe keeps (a, x, 5, 1) (the later timestamp); threshold drops (b, w); the 2-core drops c and item w
    # (only a left on it), leaving a: x y z, b: x y z
    assert data.user_ids.to_list() == ["a", "b"] and data.item_ids.to_list() == ["x", "y", "z"]
    assert (data.num_users, data.num_items) == (2, 3)
    assert data.test.select("user", "item").rows() == [(0, 2), (1, 2)]  # latest: z for both
    assert data.valid.select("user", "item").rows() == [(0, 1), (1, 1)]
    assert data.train.rows() == [(0, 0, 5.0, 1), (1, 0, 4.0, 5)]
    assert data.checksums == {str(path): sha(path)}


def test_interactions_random_split_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    rows = [(u, i) for u in range(10) for i in range(u % 5, u % 5 + 10)]
    pl.DataFrame(rows, schema=["user", "item"], orient="row").write_parquet(path)
    data = InteractionsSource(path=str(path), split=SplitConfig(ratios=[0.8, 0.2], seed=3)).load()
    assert data.valid is None and (data.train.height, data.test.height) == (80, 20)
    assert data.num_items == 14 and data.item_ids.to_list() == list(range(14))
    again = InteractionsSource(path=str(path), split=SplitConfig(ratios=[0.8, 0.2], seed=3)).load()
    assert again.test.equals(data.test)


def test_interactions_errors(tmp_path):
    path = tmp_path / "t.csv"
    write(path, "user,item\n1,2\n1,3\n2,2\n")
    with pytest.raises(DataError, match="missing column 'ts'; available: user, item"):
        InteractionsSource(path=str(path), timestamp_col="ts").load()
    with pytest.raises(DataError, match="needs a rating column"):
        InteractionsSource(path=str(path), rating_threshold=4).load()
    with pytest.raises(DataError, match="no interactions left after 5/0-core"):
        InteractionsSource(path=str(path), user_k=5).load()
    with pytest.raises(DataError, match="'temporal' needs column.*timestamp"):
        InteractionsSource(path=str(path), split={"strategy": "temporal"}).load()
    # every user has fewer than 3 interactions: leave-one-out puts all of them in train
    write(path, "user,item,t\n1,2,1\n1,3,2\n2,2,3\n")
    with pytest.raises(DataError, match="empty test split after the leave_one_out split of .*; check that users"):
        InteractionsSource(path=str(path), timestamp_col="t", split={"strategy": "leave_one_out"}).load()
    with pytest.raises(DataError, match="not found"):
        InteractionsSource(path=str(tmp_path / "none.csv")).load()


def test_recbole_atomic_end_to_end(tmp_path):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{(u + i) % 5 + 1}\t{100 * u + i}" for u in (10, 20, 30) for i in range(1, 11)]
    inter = write(tmp_path / "toy.inter.gz", "\n".join(lines) + "\n")
    data = RecBoleAtomicSource(path=str(tmp_path), split={"strategy": "temporal", "ratios": [0.8, 0.1, 0.1]}).load()
    assert data.user_ids.to_list() == [10, 20, 30] and data.item_ids.to_list() == list(range(1, 11))
    assert (data.train.height, data.valid.height, data.test.height) == (24, 3, 3)
    assert data.test.select("user", "item").rows() == [(0, 9), (1, 9), (2, 9)]  # item 10 is each user's latest
    assert data.checksums == {str(inter): sha(inter)}
    assert data.train.columns == ["user", "item", "rating", "timestamp"]


def test_recbole_atomic_ml100k():
    path = DATA / "ml-100k"
    if not path.is_dir():
        pytest.skip("ml-100k not available")
    data = RecBoleAtomicSource(path=str(path), rating_threshold=4, split={"strategy": "random", "seed": 2020}).load()
    s = data.summary()
    assert s["num_train"] + s["num_valid"] + s["num_test"] == 55_375  # ratings >= 4 in ML-100K
    assert s["sha256.ml-100k.inter.gz"] == "81d86b355659ba227b51ff530bc91f910bffec197c887e4e7828450370bb42f8"
