"""GRU4Rec against a naive float64 GRU loop, its padding invariance, tied scoring shapes and ONNX export."""

from __future__ import annotations

import pytest
import torch

from engine_seqrec.gru4rec import GRU4Rec

NUM_ITEMS = 25


def make(**kwargs) -> GRU4Rec:
    args = {"num_items": NUM_ITEMS, "max_len": 8, "embedding_dim": 6, "hidden_dim": 5, "num_layers": 1,
            "dropout": 0.3, **kwargs}
    return GRU4Rec(**args).double().eval()


def naive_outputs(model: GRU4Rec, seq: list[int]) -> torch.Tensor:
    """The GRU equations (PyTorch's gate order r, z, n; no biases), one step at a time, then the projection."""
    xs = [model.item_embedding.weight[v] for v in seq]
    for layer in range(model.num_layers):
        w_ih, w_hh = getattr(model.gru, f"weight_ih_l{layer}"), getattr(model.gru, f"weight_hh_l{layer}")
        H = model.hidden_dim
        h = torch.zeros(H, dtype=torch.float64)
        out = []
        for x in xs:
            gi, gh = w_ih @ x, w_hh @ h
            r = torch.sigmoid(gi[:H] + gh[:H])
            z = torch.sigmoid(gi[H:2 * H] + gh[H:2 * H])
            n = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
            h = (1 - z) * n + z * h
            out.append(h)
        xs = out
    return torch.stack([model.proj.weight @ g + model.proj.bias for g in xs])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru4rec_matches_naive_loop_and_ignores_padding(num_layers):
    model = make(num_layers=num_layers)
    seq = [3, 7, 7, 1, 25]
    with torch.no_grad():
        for width in (5, 6, 8):
            padded = torch.tensor([[0] * (width - len(seq)) + seq])
            out = model(padded)[0]
            assert torch.allclose(out[width - len(seq):], naive_outputs(model, seq), atol=1e-10)
            assert (out[: width - len(seq)] == 0).all()
            assert torch.allclose(model.encode(padded)[0], naive_outputs(model, seq)[-1], atol=1e-10)


def test_gru4rec_shapes_and_tied_table():
    model = GRU4Rec(NUM_ITEMS, max_len=8, embedding_dim=6, hidden_dim=10)
    seqs = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, NUM_ITEMS + 1]])
    assert model(seqs).shape == (2, 8, 6) and model.encode(seqs).shape == (2, 6)
    table = model.item_embeddings()
    assert table.shape == (NUM_ITEMS + 1, 6) and torch.equal(table[0], torch.zeros(6))
    assert (model.encode(seqs) @ table.T).shape == (2, NUM_ITEMS + 1)
    assert repr(model) == f"GRU4Rec({NUM_ITEMS}, dim=6, hidden=10, num_layers=1)"
    with pytest.raises(ValueError, match="exceed max_len"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_gru4rec_exports_to_onnx(tmp_path):
    from engine.export import export_onnx, parity_check
    from engine_seqrec.export import SequenceEncoderExport

    module = SequenceEncoderExport(GRU4Rec(NUM_ITEMS, max_len=8)).eval()
    path = export_onnx(module, (torch.randint(1, NUM_ITEMS, (2, 8)),), tmp_path / "g.onnx", ["item_seq"],
                       ["seq_repr"], dynamic_batch=["item_seq"])
    seqs = torch.randint(1, NUM_ITEMS + 1, (9, 8))
    seqs[:4, :3] = 0
    assert parity_check(module, path, (seqs,), ["item_seq"])["max_abs_diff"] < 1e-4
