"""infcore.steps: the workflow's linear-model steps end to end on a small random problem (in
process, no Snakemake), chained as the rules chain them; and the figure rows they feed."""

from __future__ import annotations

import pytest
import torch
from infcore.config import shard_indices
from infcore.data import make_random
from infcore.metrics import pearson
from infcore.selection import top_k
from infcore.steps import (
    gather_loo,
    influence_cg,
    influence_lissa,
    loo_factor,
    loo_shard,
    make_objective,
    train,
)
from infcore.tables import PANELS, figure_rows


@pytest.fixture(scope="module")
def small_run():
    """All steps of one experiment on a small random problem, as the rules chain them."""
    ds = make_random(5, 3, 200, 20, seed=4, input_std=1.0)
    settings = {"model": "logreg", "l2": 0.01}
    obj = make_objective(ds, settings)
    theta, rec = train(obj, ds, {"tol": 1e-10, "max_lbfgs": 500, "max_newton": 30}, log=lambda m: None)
    cg = {"tol": 1e-10, "maxiter": 500, "damping": 0.0, "preconditioner": "none"}
    tests = [0, 1]
    preds, sels, diags = {}, {}, {}
    for t in tests:
        preds[t], diags[t] = influence_cg(obj, theta, ds, t, cg, log=lambda m: None)
        sels[t] = top_k(preds[t], 30)
    factor, _ = loo_factor(obj, theta, log=lambda m: None)
    loo = {"tol": 1e-10, "max_steps": 30}
    shards = [loo_shard(obj, theta, ds, shard_indices([s.tolist() for s in sels.values()], i, 3), tests, loo,
                        log=lambda m: None, factor=factor) for i in (1, 2, 3)]
    rows, summary = gather_loo(shards)
    return ds, obj, theta, rec, preds, sels, diags, rows, summary


def test_train_record(small_run):
    ds, obj, theta, rec, *_ = small_run
    assert rec["converged"] and rec["grad_maxnorm"] <= 1e-10
    assert 0.4 < rec["train_accuracy"] <= 1.0 and rec["n_train"] == 200 and rec["dim"] == 15


def test_cg_predictions_match_loo(small_run):
    ds, obj, theta, rec, preds, sels, diags, rows, summary = small_run
    assert summary["all_converged"] and summary["max_grad_maxnorm"] <= 1e-10
    assert summary["points"] == len(set(sels[0].tolist()) | set(sels[1].tolist()))
    for t in (0, 1):
        assert diags[t]["converged"] and diags[t]["final_residual"] <= 1e-10
        assert diags[t]["test_index"] == t and diags[t]["label"] == int(ds.y_test[t])
        actual = {r["train_index"]: r["actual"] for r in rows if r["test_index"] == t}
        idx = sels[t].tolist()
        assert pearson([float(preds[t][i]) for i in idx], [actual[i] for i in idx]) > 0.99
    # the LOO theta of one point, checked directly: test loss difference
    r = next(r for r in rows if r["test_index"] == 0)
    assert abs(r["actual"] - (r["test_loss_without"] - r["test_loss"])) < 1e-15


def test_lissa_and_figure_rows(small_run):
    ds, obj, theta, rec, preds, sels, diags, rows, summary = small_run
    lissa = {"depth": 2000, "scale": 10.0, "repeats": 4, "batch_size": 5, "damping": 0.0, "seed": 17}
    pred, diag = influence_lissa(obj, theta, ds, 0, sels[0], lissa, log=lambda m: None)
    assert pred.shape == (30,) and diag["scale"] == 10.0 and diag["largest_eigenvalue"] > 0
    assert diag["largest_example_eigenvalue"] >= diag["largest_eigenvalue"] * 0.5
    assert pearson(pred, preds[0][sels[0]]) > 0.95
    selection = [{"rank": r, "train_index": i, "train_label": int(ds.y_train[i]), "predicted": float(preds[0][i])}
                 for r, i in enumerate(sels[0].tolist())]
    fr = figure_rows("e", 0, selection, dict(zip(sels[0].tolist(), pred.tolist(), strict=True)), rows)
    assert len(fr) == 60 and {r["panel"] for r in fr} == {PANELS["cg"], PANELS["lissa"]}
    assert [r["train_index"] for r in fr if r["method"] == "cg"] == sels[0].tolist()
    with pytest.raises(KeyError):
        figure_rows("e", 5, selection, {}, rows)  # no LOO rows for test point 5


def test_gather_rejects_out_of_order_shards(small_run):
    *_, rows, summary = small_run
    t = torch.tensor
    shard = {"indices": t([3, 4]), "test_indices": t([0]), "base_losses": t([1.0]), "test_losses": t([[1.0], [2.0]]),
             "grad_maxnorm": t([0.0, 0.0]), "steps": t([1, 1]), "converged": t([True, True]),
             "seconds": 1.0, "setup_seconds": 0.0}
    rows, summary = gather_loo([shard])
    assert [r["actual"] for r in rows] == [0.0, 1.0] and summary["seconds_per_point"] == 0.5
    with pytest.raises(ValueError, match="overlap or are out of order"):
        gather_loo([shard, shard])
