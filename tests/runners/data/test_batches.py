"""Batches: seeded random training windows, fixed evaluation windows, document windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gatelab.runners.data.batches import eval_batches, sample_batch, window_starts


def test_sample_batch_is_seeded_and_shifted_by_one() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    x1, y1 = sample_batch(tokens, 4, 32, torch.Generator().manual_seed(3))
    x2, y2 = sample_batch(tokens, 4, 32, torch.Generator().manual_seed(3))
    x3, _ = sample_batch(tokens, 4, 32, torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == y1.shape == (4, 32) and x1.dtype == y1.dtype == torch.int64
    assert torch.equal(y1, x1 + 1)  # on arange, the next token is the id plus one


def test_sample_batch_reaches_the_last_window() -> None:
    tokens = np.arange(33, dtype=np.uint16)
    x, y = sample_batch(tokens, 2, 32, torch.Generator().manual_seed(0))
    assert torch.equal(x[0], torch.arange(32)) and torch.equal(y[0], torch.arange(1, 33))
    with pytest.raises(ValueError, match="a split of 32 tokens is too short for seq_len 32"):
        sample_batch(tokens[:32], 2, 32, torch.Generator())


def test_eval_batches_are_fixed_and_span_the_split() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    fixed = eval_batches(tokens, 4, 32, 3)
    assert len(fixed) == 3 and all(x.shape == y.shape == (4, 32) for x, y in fixed)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(fixed, eval_batches(tokens, 4, 32, 3),
                                                        strict=True))
    assert int(fixed[0][0][0, 0]) == 0 and int(fixed[-1][1][-1, -1]) == 9_999
    short = eval_batches(tokens[:40], 4, 32, 2)
    starts = [int(x[i, 0]) for x, _ in short for i in range(4)]
    assert starts == list(range(8))  # 8 overlapping windows: all the 40 tokens allow


def test_document_windows_open_on_the_end_of_text_token() -> None:
    eot = 99
    tokens = np.arange(1_000, dtype=np.int64) % 90
    tokens[[0, 250, 600, 980]] = eot
    starts = window_starts(tokens, 32, eot)
    assert starts.tolist() == [0, 250, 600]  # 980 leaves no room for 32 + 1 tokens
    x, y = sample_batch(tokens, 16, 32, torch.Generator().manual_seed(0), starts)
    assert (x[:, 0] == eot).all() and torch.equal(x[:, 1:], y[:, :-1])
    assert {int(v) for v in x[:, 1]} <= {1, 71, 61}  # the tokens after each EOT
    fixed = eval_batches(tokens, 2, 32, 2, eot)
    assert all((x[:, 0] == eot).all() for x, _ in fixed)
    with pytest.raises(ValueError, match="no end-of-text token leaves room"):
        window_starts(tokens[1:], 900, eot)
