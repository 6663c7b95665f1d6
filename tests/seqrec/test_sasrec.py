"""SASRec against a naive float64 reference (explicit per-position attention loops), its causal and padding
invariances, tied scoring, and ONNX export with a dynamic batch."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from engine_seqrec.sasrec import SASRec
from engine_seqrec.transformer import causal_padding_mask

NUM_ITEMS = 30


def make(**kwargs) -> SASRec:
    args = {"num_items": NUM_ITEMS, "max_len": 10, "hidden_dim": 8, "num_layers": 2, "num_heads": 2,
            "inner_dim": 16, "dropout": 0.5, "attn_dropout": 0.5, **kwargs}
    model = SASRec(**args).double().eval()
    with torch.no_grad():  # move LayerNorm and biases off their (1, 0) init so the reference checks them
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        model.item_embedding.weight[0].zero_()
    return model


def left_padded(seq: list[int], width: int) -> torch.Tensor:
    return torch.tensor([[0] * (width - len(seq)) + seq])


def layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mu, var = x.mean(), ((x - x.mean()) ** 2).mean()
    return (x - mu) / math.sqrt(var + ln.eps) * ln.weight + ln.bias


def naive_hidden(model: SASRec, seq: list[int]) -> list[torch.Tensor]:
    """Hidden states of the real items of one sequence: a loop over positions, heads and keys, float64."""
    n, L, D = len(seq), model.max_len, model.hidden_dim
    h = [layer_norm(model.item_embedding.weight[v] + model.position_embedding.weight[L - n + t], model.norm)
         for t, v in enumerate(seq)]
    for block in model.blocks:
        W, b = block.qkv.weight, block.qkv.bias
        q = [W[:D] @ x + b[:D] for x in h]
        k = [W[D:2 * D] @ x + b[D:2 * D] for x in h]
        v = [W[2 * D:] @ x + b[2 * D:] for x in h]
        H, d = model.num_heads, D // model.num_heads
        new = []
        for t in range(n):
            heads = []
            for a in range(H):
                sl = slice(a * d, (a + 1) * d)
                logits = torch.stack([q[t][sl] @ k[s][sl] / math.sqrt(d) for s in range(t + 1)])  # causal: s <= t
                w = torch.softmax(logits, 0)
                heads.append(sum(w[s] * v[s][sl] for s in range(t + 1)))
            att = block.out.weight @ torch.cat(heads) + block.out.bias
            x = layer_norm(h[t] + att, block.norm1)
            ff = block.ff2.weight @ F.gelu(block.ff1.weight @ x + block.ff1.bias) + block.ff2.bias
            new.append(layer_norm(x + ff, block.norm2))
        h = new
    return h


@pytest.mark.parametrize("num_layers, num_heads, seq", list(itertools.product(
    [1, 2], [1, 2, 4], [[3], [5, 1, 7], [2, 9, 9, 4, 30, 1, 8, 6, 11, 3]])))
def test_sasrec_matches_naive_reference(num_layers, num_heads, seq):
    model = make(num_layers=num_layers, num_heads=num_heads)
    with torch.no_grad():
        out = model(left_padded(seq, 10))[0]
        want = naive_hidden(model, seq)
    n = len(seq)
    assert torch.allclose(out[10 - n:], torch.stack(want), atol=1e-10)
    assert (out[: 10 - n] == 0).all()  # padded positions are zeroed (timeline mask)
    assert torch.allclose(model.encode(left_padded(seq, 10))[0], want[-1], atol=1e-10)


def test_causal_outputs_ignore_later_items():
    model = make()
    gen = torch.Generator().manual_seed(0)
    seqs = torch.randint(1, NUM_ITEMS + 1, (6, 10), generator=gen)
    seqs[:, :3] = 0
    with torch.no_grad():
        base = model(seqs)
        for t in range(3, 9):
            changed = seqs.clone()
            changed[:, t + 1:] = torch.randint(1, NUM_ITEMS + 1, changed[:, t + 1:].shape, generator=gen)
            out = model(changed)
            assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-12), t
            assert not torch.allclose(out[:, -1], base[:, -1])


def test_encode_is_invariant_to_left_padding():
    model = make()
    seq = [4, 8, 15, 16, 23]
    with torch.no_grad():
        encodings = [model.encode(left_padded(seq, width))[0] for width in (5, 6, 9, 10)]
        batch = torch.cat([left_padded(seq, 10), left_padded([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10)])
        in_batch = model.encode(batch)[0]
    for e in encodings[1:] + [in_batch]:
        assert torch.allclose(e, encodings[0], atol=1e-12)
    with pytest.raises(ValueError, match="exceed max_len"):
        model(torch.ones(1, 11, dtype=torch.long))


def test_attention_mask_rows_are_never_empty():
    real = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    mask = causal_padding_mask(real)[:, 0]
    assert mask.any(-1).all()
    assert mask[0].tolist() == [[True, False, False, False], [False, True, False, False],
                                [False, False, True, False], [False, False, True, True]]
    assert torch.equal(mask[1], torch.ones(4, 4, dtype=torch.bool).tril())
    model = make().float()
    with torch.no_grad():
        out = model(torch.zeros(2, 10, dtype=torch.long))  # all padding: zeros, not NaN
    assert torch.equal(out, torch.zeros_like(out))


def test_tied_scoring_shapes_and_init():
    model = SASRec(NUM_ITEMS, max_len=7, hidden_dim=12, num_layers=1, num_heads=3)
    table = model.item_embeddings()
    assert table.shape == (NUM_ITEMS + 1, 12)
    assert model.item_embedding.weight.shape == (NUM_ITEMS + 2, 12)  # + the augmenters' mask token
    assert table.data_ptr() == model.item_embedding.weight.data_ptr()  # a view of the trained table: tied
    assert torch.equal(table[0], torch.zeros(12))
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, NUM_ITEMS + 1]])
    scores = model.encode(seqs) @ table.T
    assert scores.shape == (2, NUM_ITEMS + 1)
    assert 0.015 < float(model.position_embedding.weight.detach().std()) < 0.025
    model.reset_parameters()
    assert torch.equal(model.item_embeddings()[0], torch.zeros(12))
    assert repr(model) == f"SASRec({NUM_ITEMS}, max_len=7, dim=12, num_layers=1, num_heads=3)"
    with pytest.raises(ValueError, match="divisible"):
        SASRec(NUM_ITEMS, hidden_dim=10, num_heads=3)


def test_dropout_makes_training_passes_differ():
    model = make().train()
    seqs = torch.randint(1, NUM_ITEMS + 1, (4, 10))
    a, b = model.encode(seqs), model.encode(seqs)
    assert not torch.allclose(a, b)
    assert torch.allclose(model.eval().encode(seqs), model.encode(seqs))


def test_sasrec_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    from engine.export import export_onnx, parity_check
    from engine_seqrec.export import SequenceEncoderExport

    torch.manual_seed(0)
    module = SequenceEncoderExport(SASRec(NUM_ITEMS, max_len=10, hidden_dim=16)).eval()
    path = export_onnx(module, (torch.randint(1, NUM_ITEMS, (3, 10)),), tmp_path / "m.onnx", ["item_seq"],
                       ["seq_repr"], dynamic_batch=["item_seq"])
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 17):
        seqs = torch.randint(1, NUM_ITEMS + 1, (batch, 10), generator=gen)
        lengths = torch.randint(1, 11, (batch,), generator=gen)
        seqs[torch.arange(10) < (10 - lengths).unsqueeze(1)] = 0
        report = parity_check(module, path, (seqs,), ["item_seq"])
        assert report["max_abs_diff"] < 1e-4 and report["outputs"] == ["seq_repr"]


@pytest.mark.parametrize("encoder", ["sasrec", "gru4rec"])
def test_by_length_groups_give_the_padded_pass(encoder):
    """Running the encoder per group of similar lengths (each cut to its width) equals one padded pass: outputs and
    gradients."""
    from engine_seqrec.bucketing import by_length
    from engine_seqrec.gru4rec import GRU4Rec

    torch.manual_seed(0)
    model = (make() if encoder == "sasrec" else GRU4Rec(NUM_ITEMS, max_len=10).double().eval())
    gen = torch.Generator().manual_seed(2)
    seqs = torch.randint(1, NUM_ITEMS + 1, (9, 10), generator=gen)
    lengths = torch.tensor([1, 2, 3, 4, 5, 7, 9, 10, 2])
    seqs[torch.arange(10) < (10 - lengths).unsqueeze(1)] = 0
    grouped = by_length(model, seqs)
    dense = model(seqs)
    assert grouped.shape == dense.shape and torch.allclose(grouped, dense, atol=1e-12)
    assert torch.allclose(by_length(model.encode, seqs), model.encode(seqs), atol=1e-12)
    (g1,) = torch.autograd.grad((grouped ** 2).sum(), [model.item_embedding.weight])
    (g2,) = torch.autograd.grad((model(seqs) ** 2).sum(), [model.item_embedding.weight])
    assert torch.allclose(g1, g2, atol=1e-10)
    short = seqs[:2]  # one group narrower than the batch
    assert torch.allclose(by_length(model, short), model(short), atol=1e-12)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_encode_computes_the_last_position_alone_with_the_same_values(num_layers):
    """encode() runs the last block for the last query only: it equals forward()[:, -1], with padding, in eval mode
    and in training mode under the same dropout draws."""
    torch.manual_seed(0)
    model = SASRec(num_items=30, max_len=8, hidden_dim=12, num_layers=num_layers, num_heads=3, inner_dim=20,
                   dropout=0.0, attn_dropout=0.0)
    seqs = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 9], [0, 0, 0, 0, 0, 0, 0, 3],
                         [0, 0, 0, 0, 0, 0, 0, 0]])
    model.eval()
    with torch.no_grad():
        full = model(seqs)[:, -1]
        assert torch.allclose(model.encode(seqs), full, atol=1e-6)
        rows = [0, 2, 3]  # the ones with at most 5 items: narrower padding, same output
        assert torch.allclose(model.encode(seqs[rows, 3:]), full[rows], atol=1e-6)
    assert model.encode(seqs).abs()[3].max() == 0  # an empty sequence stays zero
    model.train()
    loss = model.encode(seqs).pow(2).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(seqs)[:, -1].pow(2).sum().backward()
    for name, p in model.named_parameters():
        if name in grads:
            assert torch.allclose(grads[name], p.grad, atol=1e-5), name
