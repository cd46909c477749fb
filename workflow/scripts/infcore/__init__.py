"""infcore: influence functions for PyTorch models (Koh & Liang 2017).

Autograd Hessian-vector products, CG and LiSSA inverse-HVP solvers, influence scores with
one sign and scale contract, certified leave-one-out retraining, and agreement metrics.
Submodules import lazily so that light consumers (plotting, tables) do not pay for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"objective", "solvers", "influence", "fit", "loo", "metrics", "selection",
               "data", "config", "progress", "steps", "plotting", "tables", "cnn"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
