"""infcore.certify.certified_fit on small non-convex functions whose stationary points are
known in closed form: a start exactly at a saddle is left along its negative curvature and
the fit ends at a certified minimum; the certificate's eigenvalues are the function's.

Tolerances: the minima are exact (y = +-1, x = 0) and Newton converges quadratically, so the
gradient reaches round-off (~1e-15); the fit's tol is 1e-12 and the minimizer is checked to
1e-10, the eigenvalues (2 and 8 at the minimum) to 1e-8.
"""

from __future__ import annotations

import torch
from infcore.certify import certified_fit


class Saddle2D:
    """``f(x, y) = x^2 + (y^2 - 1)^2``: a saddle at the origin (Hessian diag(2, -4)), minima at
    (0, +-1) (Hessian diag(2, 8)). No null directions."""

    dim = 2

    def loss_and_grad(self, t: torch.Tensor):
        x, y = t[0], t[1]
        f = x * x + (y * y - 1) ** 2
        return f, torch.stack([2 * x, 4 * y * (y * y - 1)])

    def hessian(self, t: torch.Tensor) -> torch.Tensor:
        y = t[1]
        return torch.diag(torch.stack([torch.ones((), dtype=t.dtype) * 2, 12 * y * y - 4]))

    def null_space(self):
        return None


def test_start_at_a_saddle_ends_at_a_certified_minimum():
    start = torch.zeros(2, dtype=torch.float64)  # gradient exactly 0: L-BFGS stops at once
    res = certified_fit(Saddle2D(), start, tol=1e-12, lbfgs_tol=1e-10, max_lbfgs=200, log=lambda m: None)
    assert res.converged and res.spectrum.positive_definite
    assert res.lbfgs_rounds == 2  # the first round stopped at the saddle, the second after leaving it
    assert abs(float(res.theta[0])) <= 1e-10 and abs(abs(float(res.theta[1])) - 1) <= 1e-10
    assert abs(res.spectrum.lam_min - 2) <= 1e-8 and abs(res.spectrum.lam_max - 8) <= 1e-8
    assert res.grad_maxnorm <= 1e-12 and res.summary()["is_local_minimum"]


def test_without_rounds_a_saddle_is_reported_not_certified():
    """max_rounds = 1: no way off the saddle; the certificate says it is not a minimum."""
    start = torch.zeros(2, dtype=torch.float64)
    res = certified_fit(Saddle2D(), start, tol=1e-12, lbfgs_tol=1e-10, max_lbfgs=200, max_rounds=1,
                        log=lambda m: None)
    assert res.grad_maxnorm == 0.0 and not res.spectrum.positive_definite
    assert abs(res.spectrum.lam_min + 4) <= 1e-12
