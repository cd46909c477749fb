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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end run of the session config (config/tiny.yaml plus a tiny CNN) through
    the snakemake CLI, shared by every test that reads a tiny run's outputs."""
    from workflow_utils import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny_run"))
