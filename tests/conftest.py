"""Shared fixtures: small analytic problems in float64."""

from __future__ import annotations

import pytest
from infcore.fit import fit
from problems import make_logistic


@pytest.fixture(scope="session")
def logistic_problem():
    obj, Xt, yt = make_logistic()
    res = fit(obj, tol=1e-12)
    return obj, res.theta, Xt, yt
