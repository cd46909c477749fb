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
