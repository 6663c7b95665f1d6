"""Gradient caching: a full-batch contrastive loss with the encoder run in sub-batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from engine.components import ObjectiveOutput

__all__ = ["grad_cache"]

Chunk = Any  # a Tensor, a tuple of positional arguments, or a dict of keyword arguments


def _call(encoder: Callable[..., Tensor], chunk: Chunk) -> Tensor:
    if isinstance(chunk, dict):
        return encoder(**chunk)
    if isinstance(chunk, (tuple, list)):
        return encoder(*chunk)
    return encoder(chunk)


def _devices(chunk: Chunk) -> list[int]:
    values = chunk.values() if isinstance(chunk, dict) else chunk if isinstance(chunk, (tuple, list)) else [chunk]
    return sorted({v.device.index or 0 for v in values if isinstance(v, Tensor) and v.device.type == "cuda"})


class _RngState:
    """The CPU (and CUDA) random state before a chunk's first forward, replayed for its second one (dropout)."""

    def __init__(self, devices: list[int]) -> None:
        self.devices = devices
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in devices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            yield


def grad_cache(
    encoders: Callable[..., Tensor] | Sequence[Callable[..., Tensor]],
    inputs: Sequence[Sequence[Chunk]],
    objective: Callable[..., ObjectiveOutput | Tensor],
    **objective_kwargs: Any,
) -> ObjectiveOutput:
    r"""Compute ``objective`` over the whole batch and backpropagate it, running the encoders in sub-batches.

    A contrastive loss couples every row of the batch, so its gradient needs all representations at once, but the
    encoder's activations need not be. Gradient caching splits the work in three steps:

    1. encode every sub-batch without a graph (``torch.no_grad``) and concatenate the representations
       :math:`r = [f(x_1); \dots; f(x_C)]`;
    2. evaluate the loss on :math:`r` (detached leaves) and backpropagate to get :math:`g = \partial \mathcal{L} /
       \partial r` (and the gradients of the objective's own parameters, such as a learnable temperature);
    3. encode each sub-batch again, with a graph, and call ``f(x_c).backward(g_c)``: the chain rule gives the
       parameters the same gradient as one full-batch backward.

    Peak activation memory is one sub-batch's; the price is a second encoder forward. The random state before
    each first forward is replayed for the second, so dropout masks match. Gradients accumulate into ``.grad``
    like ``loss.backward()``; call ``optimizer.step()`` afterwards.

    Reference: Gao et al., `Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup
    <https://arxiv.org/abs/2101.06983>`_ (RepL4NLP 2021).

    Args:
        encoders: one encoder per input group (e.g. a query and a document tower), or a single encoder for all.
        inputs: one list of sub-batches per group; each sub-batch is a tensor, a tuple of positional arguments or a
            dict of keyword arguments, and its encoder returns a ``[b, D]`` tensor.
        objective: called as ``objective(r_1, ..., r_G, **objective_kwargs)`` on the concatenated ``[B, D]``
            representations of the groups; returns an :class:`~engine.components.ObjectiveOutput` or a scalar.
        **objective_kwargs: passed to ``objective`` (e.g. ``labels=``).

    Returns:
        The objective's output, with the loss and parts detached (the backward has already run).

    Example::

        out = grad_cache(encoder, [queries.split(64), docs.split(64)], InfoNCE())
        optimizer.step()
    """
    groups = [list(g) for g in inputs]
    if not groups or any(not g for g in groups):
        raise ValueError("grad_cache: inputs must be a non-empty list of groups, each a non-empty list of chunks")
    if callable(encoders):
        encoders = [encoders] * len(groups)
    encoders = list(encoders)
    if len(encoders) != len(groups):
        raise ValueError(f"grad_cache: {len(encoders)} encoders for {len(groups)} input groups")

    # 1. representations without a graph, remembering each chunk's random state
    reps: list[list[Tensor]] = []
    states: list[list[_RngState]] = []
    with torch.no_grad():
        for encoder, chunks in zip(encoders, groups):
            reps.append([])
            states.append([])
            for chunk in chunks:
                states[-1].append(_RngState(_devices(chunk)))
                reps[-1].append(_call(encoder, chunk))

    # 2. the loss on detached representations, and its gradient with respect to them
    leaves = [torch.cat(r).detach().requires_grad_() for r in reps]
    out = objective(*leaves, **objective_kwargs)
    loss = out.loss if isinstance(out, ObjectiveOutput) else out
    loss.backward()

    # 3. re-encode each chunk with a graph and push its slice of the cached gradient through the encoder
    for encoder, chunks, group_reps, group_states, leaf in zip(encoders, groups, reps, states, leaves):
        offset = 0
        for chunk, rep, state in zip(chunks, group_reps, group_states):
            n = rep.shape[0]
            with state.replay():
                again = _call(encoder, chunk)
            again.backward(leaf.grad[offset : offset + n])
            offset += n

    if isinstance(out, ObjectiveOutput):
        parts = {k: v.detach() if isinstance(v, Tensor) else v for k, v in out.parts.items()}
        return ObjectiveOutput(loss=out.loss.detach(), parts=parts)
    return ObjectiveOutput(loss=loss.detach(), parts={})
