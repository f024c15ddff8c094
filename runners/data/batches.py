"""Batches drawn from a split's token ids: random training windows and fixed evaluation ones.

Windows start anywhere in the joined token stream, or (``WindowStart.DOCUMENT``) only on an
end-of-text token, so position 0 of every window is the same token, as a BOS is. A split is an
array or memory-mapped shards (``store.ShardedTokens``); the same tokens give the same windows.
"""

from __future__ import annotations

import enum

import numpy as np
import torch

from gatelab.runners.data.store import TokenArray, positions_of


class WindowStart(enum.StrEnum):
    RANDOM = "random"
    """Any token of the joined stream."""
    DOCUMENT = "document"
    """An end-of-text token: the window then opens on a document's first token."""


def window_starts(tokens: TokenArray, seq_len: int, eot_id: int | None = None) -> np.ndarray:
    """Every legal start of a ``seq_len`` window (plus its one-token-shifted target) in
    ``tokens``: all of them, or with ``eot_id`` only those on an end-of-text token, so that
    every window opens with the same token (a BOS) and then a document's first token."""
    n_starts = len(tokens) - seq_len
    if n_starts < 1:
        raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len {seq_len}")
    if eot_id is None:
        return np.arange(n_starts, dtype=np.int64)
    starts = positions_of(tokens, eot_id, n_starts)
    if len(starts) == 0:
        raise ValueError(f"no end-of-text token leaves room for a {seq_len}-token window: "
                         "use data.window_start=random or a shorter seq_len")
    return starts


def sample_batch(tokens: TokenArray, batch_size: int, seq_len: int,
                 generator: torch.Generator, starts: np.ndarray | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at uniformly random starts (drawn from ``starts`` when given,
    see ``window_starts``): inputs ``x`` (B, T) and next-token targets ``y`` (B, T) = ``x``
    shifted by one, int64. Deterministic for a seeded ``generator``, which it advances."""
    if starts is None:
        n_starts = len(tokens) - seq_len
        if n_starts < 1:
            raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len "
                             f"{seq_len}")
        picked = torch.randint(0, n_starts, (batch_size,), generator=generator).numpy()
    else:
        picked = starts[torch.randint(0, len(starts), (batch_size,), generator=generator).numpy()]
    return _windows(tokens, picked, seq_len)


def eval_batches(tokens: TokenArray, batch_size: int, seq_len: int, n_batches: int,
                 eot_id: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` batches of windows at fixed starts spread evenly from the first legal
    start to the last (``window_starts``; with ``eot_id`` only end-of-text positions): the same
    every call. A split shorter than ``batch_size * n_batches`` disjoint windows gets
    overlapping ones (shared tokens are counted again), never a wrap."""
    if eot_id is None:  # every start is legal: pick among them without listing them all
        n_legal = len(tokens) - seq_len
        if n_legal < 1:
            raise ValueError(f"a split of {len(tokens)} tokens is too short for seq_len "
                             f"{seq_len}")
        starts = np.linspace(0, n_legal - 1, batch_size * n_batches).round().astype(np.int64)
    else:
        legal = window_starts(tokens, seq_len, eot_id)
        picks = np.linspace(0, len(legal) - 1, batch_size * n_batches).round().astype(np.int64)
        starts = legal[picks]
    return [_windows(tokens, starts[i:i + batch_size], seq_len)
            for i in range(0, len(starts), batch_size)]


def _windows(tokens: TokenArray, starts: np.ndarray, seq_len: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    rows_BT1 = tokens.take(starts[:, None] + np.arange(seq_len + 1)).astype(np.int64)
    block = torch.from_numpy(rows_BT1)
    return block[:, :-1], block[:, 1:]
