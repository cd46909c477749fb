"""Choosing the training points to retrain."""

from __future__ import annotations

import numpy as np
import torch


def top_k(pred, k: int) -> torch.Tensor:
    """Indices of the k largest ``|pred|``, largest first; ties broken by lower index."""
    mag = torch.as_tensor(pred).detach().abs().double().cpu().numpy()
    if not 0 < k <= mag.size:
        raise ValueError(f"k = {k} must lie in [1, {mag.size}] (the number of training points)")
    order = np.lexsort((np.arange(mag.size), -mag))
    return torch.from_numpy(order[:k].copy()).long()
