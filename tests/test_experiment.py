"""infcore.experiment: config helpers the Snakefile uses, and the workflow's steps end to end
on a small random problem (in process, no Snakemake)."""

from __future__ import annotations

import pytest
import torch
from infcore.data import make_random
from infcore.experiment import (
    MODEL_FIELDS,
    PANELS,
    ConfigError,
    Progress,
    canonical,
    check_config,
    dataset_shape,
    figure_rows,
    gather_loo,
    influence_cg,
    influence_lissa,
    loo_factor,
    loo_shard,
    make_objective,
    normalize,
    owners,
    parse_scatteritem,
    shard_indices,
    train,
)
from infcore.metrics import pearson
from infcore.selection import top_k

MNIST = {"kind": "mnist", "validation_size": 5000, "max_train": None, "max_test": None, "seed": 0,
         "input_std": 0.3, "teacher_scale": 3.0, "labels": "softmax", "label_noise": 0.0}


def exp(**kw):
    base = {"dataset": dict(MNIST), "model": "logreg", "l2": 0.01, "fit": {"tol": 1e-10},
            "test_indices": [8], "top_k": 500, "lissa": {"batch_size": 1}}
    base.update(kw)
    return base


def test_canonical_sorts_nested_keys():
    c = canonical({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": None}})
    assert list(c) == ["a", "b"] and list(c["a"]) == ["c", "z"] and list(c["a"]["z"][1]) == ["x", "y"]


def test_normalize_keeps_dataset_keys_of_its_kind():
    n = normalize(exp())
    assert n["dataset"] == {"kind": "mnist", "max_test": None, "max_train": None, "validation_size": 5000}
    r = normalize(exp(dataset={"kind": "random", "n_features": 3, "n_classes": 2, "n_train": 9, "n_test": 4,
                               "validation_size": 5000, "seed": 1}))
    assert "validation_size" not in r["dataset"] and r["dataset"]["seed"] == 1


def test_owners_share_data_and_model_in_config_order():
    exps = {"a": normalize(exp()), "b": normalize(exp(test_indices=[1, 2], top_k=10)),
            "c": normalize(exp(l2=0.02)), "d": normalize(exp(dataset={**MNIST, "validation_size": 100}))}
    assert owners(exps, ("dataset",)) == {"a": "a", "b": "a", "c": "a", "d": "d"}
    assert owners(exps, MODEL_FIELDS) == {"a": "a", "b": "a", "c": "c", "d": "d"}


def test_dataset_shape():
    assert dataset_shape(MNIST) == (55000, 10000)
    assert dataset_shape(MNIST, (600, 100)) == (600 - 5000, 100)  # check_config rejects this
    assert dataset_shape({**MNIST, "validation_size": 100, "max_train": 50, "max_test": 20}, (600, 100)) == (50, 20)
    assert dataset_shape({"kind": "random", "n_train": 7, "n_test": 3}) == (7, 3)


@pytest.mark.parametrize("settings,counts,message", [
    (exp(top_k=60000), None, "experiments.e.top_k = 60000 exceeds n_train = 55000"),
    (exp(test_indices=[8, 10000]), None, "experiments.e.test_indices[1] = 10000 is outside the test set (n_test = 10000"),
    (exp(test_indices=[50]), (60000, 50), "experiments.e.test_indices[0] = 50 is outside the test set (n_test = 50"),
    (exp(), (600, 100), "experiments.e.dataset.validation_size = 5000 leaves no training points"),
    (exp(test_indices=[3, 3]), None, "experiments.e.test_indices repeats [3]"),
    (exp(dataset={**MNIST, "n_train": 10}), None, "experiments.e.dataset.n_train applies to random datasets only"),
    (exp(lissa={"batch_size": 60000}), None, "experiments.e.lissa.batch_size = 60000 exceeds n_train = 55000"),
])
def test_check_config_names_the_key(settings, counts, message):
    with pytest.raises(ConfigError) as err:
        check_config({"experiments": {"e": settings}}, counts)
    assert message in str(err.value)


def test_check_config_accepts_valid_and_checks_paper_figure():
    check_config({"experiments": {"e": exp()}, "paper_figure": {"linear": "e", "cnn": None}})
    with pytest.raises(ConfigError, match="paper_figure.linear = 'x' is not an experiment"):
        check_config({"experiments": {"e": exp()}, "paper_figure": {"linear": "x"}})


CNN_DS = {"kind": "mnist", "validation_size": 5000, "fraction": 0.1, "subset_seed": 0}


def cnn_exp(**kw):
    base = {"dataset": dict(CNN_DS), "model": "cnn", "l2": 0.001, "test_indices": [6558], "top_k": 100,
            "cnn": {"train": {"decay_steps": [110000, 220000], "decay_factors": [0.1, 0.01]}}}
    base.update(kw)
    return base


def test_cnn_subset_shape_and_normalize():
    assert dataset_shape(CNN_DS, model="cnn") == (5500, 10000)
    assert dataset_shape(CNN_DS) == (55000, 10000)  # fraction is the CNN's only
    n = normalize({**cnn_exp(), "loo": {"tol": 1e-10}, "cg": {}})
    assert n["dataset"] == {"fraction": 0.1, "kind": "mnist", "subset_seed": 0, "validation_size": 5000}
    assert "loo" not in n and "cg" not in n and "cnn" in n
    assert "cnn" not in normalize({**exp(), "cnn": {"width": 8}})
    check_config({"experiments": {"c": cnn_exp()}, "paper_figure": {"linear": None, "cnn": "c"}})


@pytest.mark.parametrize("settings,message", [
    (cnn_exp(top_k=5501), "experiments.e.top_k = 5501 exceeds n_train = 5500"),
    (cnn_exp(dataset={**CNN_DS, "max_train": 10}), "experiments.e.dataset.max_train applies to linear models only"),
    (cnn_exp(cnn={"train": {"decay_steps": [5], "decay_factors": [0.1, 0.2]}}),
     "experiments.e.cnn.train.decay_factors has 2 entries"),
    (cnn_exp(dataset={"kind": "random", "n_train": 9, "n_test": 3}), "model: cnn needs kind: mnist"),
    (exp(dataset={**MNIST, "fraction": 0.5}), "experiments.e.dataset.fraction applies to model: cnn only"),
])
def test_check_config_cnn_names_the_key(settings, message):
    with pytest.raises(ConfigError) as err:
        check_config({"experiments": {"e": settings}})
    assert message in str(err.value)


def test_paper_figure_roles_need_their_model():
    with pytest.raises(ConfigError, match="paper_figure.cnn = 'e' is an experiment with model: logreg"):
        check_config({"experiments": {"e": exp()}, "paper_figure": {"linear": "e", "cnn": "e"}})


def test_shards_partition_the_sorted_union():
    sel = [[5, 1, 9], [9, 2, 7, 1]]
    parts = [shard_indices(sel, i, 3).tolist() for i in (1, 2, 3)]
    assert parts == [[1, 2], [5, 7], [9]]
    assert [shard_indices([[4]], i, 3).tolist() for i in (1, 2, 3)] == [[4], [], []]
    assert parse_scatteritem("2-of-4") == (2, 4)
    with pytest.raises(ValueError):
        parse_scatteritem("5-of-4")


def test_progress_reports_rate_and_eta():
    lines = []
    p = Progress(lines.append, "LOO", 10, unit="points", every=0.0)
    p(5)
    p(10)
    assert "LOO: 5/10 points (50%)" in lines[0] and "points/s" in lines[0] and "ETA" in lines[0]
    assert "ETA 0s" in lines[1]


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
    assert len(fr) == 60 and {r["panel"] for r in fr} == set(PANELS.values())
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
