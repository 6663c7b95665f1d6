"""Sequence sources (S3Rec text, interaction tables) and the leave-one-out views, checked by hand."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest
import torch

from engine.errors import DataError
from engine_seqrec.data import SequenceData, left_pad
from engine_seqrec.sources import InteractionSequencesSource, S3RecTxtSource


def load_txt(path, **kwargs) -> SequenceData:
    return S3RecTxtSource(str(path), **kwargs).load()


def rows(data: SequenceData) -> list[list[int]]:
    return [data.items[s:e].tolist() for s, e in zip(data.indptr[:-1].tolist(), data.indptr[1:].tolist())]


# -- s3rec_txt --------------------------------------------------------------------------------------------------------


def test_s3rec_txt_plain_gzip_and_crlf_read_the_same(tmp_path, capsys):
    text = "1 5 3 9 2\n2 4 4 1\n3 7\n4 2 6 8 1 3\n\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_bytes(text.replace("\n", "\r\n").encode())
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    got = [load_txt(tmp_path / name) for name in ("a.txt", "b.txt", "c.txt.gz")]
    for data in got:
        assert rows(data) == [[5, 3, 9, 2], [4, 4, 1], [2, 6, 8, 1, 3]]  # user 3 (one item) dropped
        assert data.num_items == 9 and data.num_users == 3 and data.num_dropped == 1
        assert data.user_ids.tolist() == [1, 2, 4]
    assert "dropped 1 of 4 sequences shorter than 3" in capsys.readouterr().err
    assert set(got[2].checksums) == {str(tmp_path / "c.txt.gz")}


def test_s3rec_txt_min_length_and_empty_sequences(tmp_path):
    (tmp_path / "s.txt").write_text("1 1 2 3\n2\n3 4 5 6 7\n4 8\n")
    data = load_txt(tmp_path / "s.txt", min_length=4)
    assert rows(data) == [[4, 5, 6, 7]] and data.num_dropped == 3  # a user with no item counts as too short
    (tmp_path / "short.txt").write_text("1 1 2\n2 3\n")
    with pytest.raises(DataError, match="no sequence has >= 4 items"):
        load_txt(tmp_path / "short.txt", min_length=4)
    with pytest.raises(Exception, match="greater than or equal to 3"):
        S3RecTxtSource.Config(path="x", min_length=2)


@pytest.mark.parametrize("text, message", [
    ("1 2 3\n2 4 x5 6\n", r"line 2, column 5: expected an integer id, got 'x5'"),
    ("1 2 3.0 4\n", r"line 1, column 5: expected an integer id, got '3.0'"),
    ("1 2 3\n2 4 0 6\n", r"line 2: item id 0 is out of range; item ids start at 1"),
    ("1 2 -3 4\n", r"line 1: item id -3 is out of range"),
    ("1 2 3 4\n\n1 5 6 7\n", r"line 3: user 1 already has a sequence on line 1"),
    ("", r"no sequences in the file"),
    ("\n  \r\n", r"no sequences in the file"),
])
def test_s3rec_txt_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        load_txt(path)
    assert str(path) in str(err.value)


def test_s3rec_txt_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_txt(tmp_path / "nope.txt")
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_txt(tmp_path / "broken.txt.gz")


# -- interaction_sequences ----------------------------------------------------------------------------------------------


def test_interaction_sequences_sorts_by_time_and_renumbers_items(tmp_path):
    df = pl.DataFrame({
        "uid": ["b", "a", "a", "b", "a", "b", "c", "a", "b", "b"],
        "iid": [30, 10, 20, 10, 40, 50, 10, 10, 20, 60],
        "ts": [5, 3, 1, 1, 2, 9, 1, 7, 9, 0],
    })
    path = tmp_path / "inter.csv"
    df.write_csv(path)
    data = InteractionSequencesSource(str(path), user_col="uid", item_col="iid", timestamp_col="ts").load()
    # a: (20,1) (40,2) (10,3)->(10,7) after dedupe keeps the latest 10 at t=7 => 20 40 10
    # b: (60,0) (10,1) (30,5) (50,9) (20,9): tie at t=9 keeps file order => 60 10 30 50 20; c: one item, dropped
    ids = {10: 1, 20: 2, 30: 3, 40: 4, 50: 5, 60: 6}
    assert rows(data) == [[ids[i] for i in (20, 40, 10)], [ids[i] for i in (60, 10, 30, 50, 20)]]
    assert data.user_ids.tolist() == ["a", "b"] and data.num_dropped == 1
    assert data.item_ids.to_list() == [10, 20, 30, 40, 50, 60] and data.num_items == 6
    no_dedupe = InteractionSequencesSource(str(path), user_col="uid", item_col="iid", timestamp_col="ts",
                                           dedupe=False).load()
    assert rows(no_dedupe)[0] == [ids[i] for i in (20, 40, 10, 10)]


def test_interaction_sequences_kcore_and_errors(tmp_path, capsys):
    path = tmp_path / "inter.csv"
    pl.DataFrame({"user": [1, 1, 1, 1, 2, 2, 2, 2, 3], "item": [1, 2, 3, 5, 1, 2, 3, 4, 1],
                  "timestamp": range(9)}).write_csv(path)
    data = InteractionSequencesSource(str(path), item_k=2).load()  # items 4 and 5 go; user 3 (1 item) too short
    assert rows(data) == [[1, 2, 3], [1, 2, 3]] and data.num_items == 3 and data.num_dropped == 1
    assert "dropped 1 of 3 sequences" in capsys.readouterr().err
    data = InteractionSequencesSource(str(path), item_k=2, user_k=2).load()  # the k-core removes user 3 first
    assert data.num_users == 2 and data.num_dropped == 0
    with pytest.raises(DataError, match="no interactions left"):
        InteractionSequencesSource(str(path), item_k=4).load()
    with pytest.raises(DataError, match="no sequence has >= 5 items"):
        InteractionSequencesSource(str(path), min_length=5).load()
    with pytest.raises(DataError, match="missing column 'time'"):
        InteractionSequencesSource(str(path), timestamp_col="time").load()


# -- leave-one-out views --------------------------------------------------------------------------------------------


def hand_data() -> SequenceData:
    #           user 0: 3 items   user 1: 6 items           user 2: 4 items
    seqs = [[4, 1, 2], [5, 6, 7, 8, 9, 3], [2, 2, 7, 1]]
    indptr = np.cumsum([0] + [len(s) for s in seqs])
    return SequenceData(torch.tensor(indptr), torch.tensor(sum(seqs, [])), num_items=9)


def test_leave_one_out_views_by_hand():
    d = hand_data()
    assert d.target("valid").tolist() == [1, 9, 7]
    assert d.target("test").tolist() == [2, 3, 1]
    indptr, items = d.history("valid")
    assert indptr.tolist() == [0, 1, 5, 7] and items.tolist() == [4, 5, 6, 7, 8, 2, 2]
    indptr, items = d.history("test")
    assert indptr.tolist() == [0, 2, 7, 10] and items.tolist() == [4, 1, 5, 6, 7, 8, 9, 2, 2, 7]
    assert torch.equal(d.history("train")[1], d.history("valid")[1])
    assert [t.tolist() for t in d.train_sequences()] == [[4], [5, 6, 7, 8], [2, 2]]
    assert d.padded_history("test", 3).tolist() == [[0, 4, 1], [7, 8, 9], [2, 2, 7]]
    assert d.padded_history("valid", 5, torch.tensor([2, 0])).tolist() == [[0, 0, 0, 2, 2], [0, 0, 0, 0, 4]]
    with pytest.raises(ValueError, match="only 'valid' and 'test'"):
        d.target("train")
    assert d.summary()["num_interactions"] == 13


def test_sequence_data_rejects_bad_rows():
    with pytest.raises(ValueError, match=">= 3 items"):
        SequenceData(torch.tensor([0, 2]), torch.tensor([1, 2]), num_items=2)
    with pytest.raises(ValueError, match=r"item ids must lie in \[1, 2\]"):
        SequenceData(torch.tensor([0, 3]), torch.tensor([1, 2, 3]), num_items=2)


def test_left_pad_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 50, (40,), generator=gen)
    starts = torch.tensor([0, 3, 3, 10, 39, 20])
    ends = torch.tensor([3, 3, 9, 30, 40, 21])
    for width in (1, 4, 8, 25):
        want = torch.zeros(len(starts), width, dtype=torch.long)
        for r, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
            tail = items[s:e][-width:]
            if tail.numel():
                want[r, width - tail.numel():] = tail
        assert torch.equal(left_pad(items, starts, ends, width), want), width
