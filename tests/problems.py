"""Small analytic problems shared by tests."""

from __future__ import annotations

import torch
from infcore.objective import LogisticObjective


def make_logistic(n=300, d=5, k=3, l2=0.01, seed=0, n_test=40, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + n_test, d, generator=g, dtype=torch.float64) * scale
    W = torch.randn(k, d, generator=g, dtype=torch.float64)
    probs = torch.softmax(X @ W.T, 1)
    y = torch.multinomial(probs, 1, generator=g).squeeze(1)
    obj = LogisticObjective(X[:n], y[:n], k, l2)
    return obj, X[n:], y[n:]


def make_sparse_logistic(n=4500, d=24, k=4, l2=0.01, seed=0, window=8):
    """Image-like sparse inputs: each row is non-zero only in a window of ``window`` columns
    whose start varies by row, and the first and last columns are zero everywhere (what the
    Hessian's zero-column and row-group paths are for)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.zeros(n, d, dtype=torch.float64)
    start = torch.randint(1, d - 1 - window, (n,), generator=g)
    vals = torch.rand(n, window, generator=g, dtype=torch.float64)
    X[torch.arange(n)[:, None], start[:, None] + torch.arange(window)[None, :]] = vals
    W = torch.randn(k, d, generator=g, dtype=torch.float64) * 2
    y = torch.multinomial(torch.softmax(X @ W.T, 1), 1, generator=g).squeeze(1)
    return LogisticObjective(X, y, k, l2)
