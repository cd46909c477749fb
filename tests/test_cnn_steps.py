"""infcore.cnn.steps, the LOO gather with a control run and the CNN figure table: the steps the
cnn_* rule scripts call, in process on fake 28x28 MNIST files (width 2, a few steps)."""

from __future__ import annotations

import math

import pytest
import torch
from fake_mnist import write_fake_mnist
from infcore import cnn
from infcore.cnn.steps import (
    check_device,
    influence_test_point,
    load_data,
    loo_runs,
    train_model,
    unpack_state,
)
from infcore.metrics import agreement
from infcore.steps import gather_loo
from infcore.tables import cnn_figure_table

SETTINGS = {
    "dataset": {"kind": "mnist", "validation_size": 20, "fraction": 0.5, "subset_seed": 0},
    "device": "cpu", "l2": 1e-3, "width": 2,
    "train": {"steps": 12, "batch_size": 20, "lr": 3e-3, "decay_steps": [8], "decay_factors": [0.5],
              "seed": 0, "init_seed": 0, "log_every": 4},
    "influence": {"damping": 0.5, "hvp_batch_size": 25, "tol": 1e-8, "maxiter": 50},
    "loo": {"steps": 5, "lr": None, "seed": 1, "chunk": 2, "streams": "shared"},
    "top_k": 4, "test_indices": [3, 7],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_fake_mnist(root, n_train=120, n_test=30, seed=2)
    d = load_data(SETTINGS, str(root))
    state, info = train_model(SETTINGS, d)
    return d, state, info


def test_train_model_state_and_record(run):
    d, state, info = run
    assert d.x_train.shape == (50, 1, 28, 28) and info["n_train"] == 50 and info["n_test"] == 30
    theta, adam, step = unpack_state(state, "cpu")
    ref = cnn.train(d.x_train, d.y_train, steps=12, batch_size=20, lr=3e-3, decay_steps=[8],
                    decay_factors=[0.5], l2=1e-3, seed=0, init_seed=0, width=2, log_every=4)
    assert torch.equal(theta, ref.theta) and torch.equal(adam.v, ref.adam.v)
    assert step == 12 and adam.step == 12 and info["dim"] == cnn.num_params(2) == theta.numel()
    assert info["final_lr"] == 3e-3 * 0.5 and [s for s, _ in info["trace"]] == [4, 8, 12]
    assert info["train_objective"] == pytest.approx(float(cnn.objective(theta, d.x_train, d.y_train, 1e-3, 2)))


def test_influence_test_point_selects_top_k_of_the_predictions(run):
    d, state, _ = run
    warnings = []
    rows, tensors, info = influence_test_point(SETTINGS, d, state, 3, log=lambda m: None,
                                               warn=warnings.append)
    ref = cnn.influence(state["theta"], d.x_train, d.y_train, d.x_test[3:4], d.y_test[3:4], l2=1e-3,
                        damping=0.5, hvp_batch_size=25, tol=1e-8, maxiter=50, width=2)
    torch.testing.assert_close(tensors["pred"], ref.pred, rtol=0, atol=0)
    order = tensors["pred"].abs().argsort(descending=True)[:4].tolist()
    assert [r["train_index"] for r in rows] == order and [r["rank"] for r in rows] == [0, 1, 2, 3]
    assert [r["mnist_index"] for r in rows] == [int(d.train_source[i]) for i in order]
    assert info["test_index"] == 3 and info["label"] == int(d.y_test[3])
    assert info["cg_converged"] == ref.cg.converged and bool(warnings) == (not ref.cg.converged)


def test_loo_runs_and_gather_with_control(run):
    d, state, _ = run
    shard = loo_runs(SETTINGS, d, state, [2, 9], log=lambda m: None)
    control = loo_runs(SETTINGS, d, state, [cnn.CONTROL], log=lambda m: None)
    theta, adam, _ = unpack_state(state, "cpu")
    lr = 3e-3 * 0.5  # loo.lr null: where the schedule ended
    ref = cnn.retrain(theta, adam, d.x_train, d.y_train, [2, 9, cnn.CONTROL], steps=5, lr=lr,
                      batch_size=20, l2=1e-3, seed=1, width=2, x_eval=d.x_test[[3, 7]],
                      y_eval=d.y_test[[3, 7]])
    torch.testing.assert_close(torch.cat([shard["test_losses"], control["test_losses"]]), ref.eval_losses)
    assert shard["lr"] == lr and shard["steps"] == 5 and shard["indices"].tolist() == [2, 9]
    empty = loo_runs(SETTINGS, d, state, [], log=lambda m: None)
    rows, summary = gather_loo([shard, empty], control=control)
    assert [(r["test_index"], r["train_index"]) for r in rows] == [(3, 2), (3, 9), (7, 2), (7, 9)]
    for r in rows:
        j = [3, 7].index(r["test_index"])
        loss = float(shard["test_losses"][[2, 9].index(r["train_index"]), j])
        assert r["actual"] == loss - float(shard["base_losses"][j])
        assert r["actual_controlled"] == loss - float(control["test_losses"][0, j])
        assert "grad_maxnorm" not in r
    drift = float(control["test_losses"][0, 0] - control["base_losses"][0])
    assert summary["control_drift"]["3"] == drift and summary["points"] == 2 and summary["shards"] == 2
    assert summary["steps"] == 5 and summary["lr"] == lr and "max_grad_maxnorm" not in summary


def test_check_device_names_the_setting():
    assert check_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cnn.device: cuda"):
            check_device("cuda")


def test_gather_with_control_on_given_numbers():
    t = torch.tensor
    shard = {"indices": t([3, 5]), "test_indices": t([0, 4]), "base_losses": t([1.0, 2.0]),
             "test_losses": t([[1.5, 2.0], [0.5, 3.0]]), "seconds": 2.0}
    control = {"indices": t([cnn.CONTROL]), "test_indices": t([0, 4]), "base_losses": t([1.0, 2.0]),
               "test_losses": t([[1.25, 2.5]]), "seconds": 1.0, "steps": 7, "lr": 0.1}
    rows, summary = gather_loo([shard], control=control)
    assert [r["actual"] for r in rows] == [0.5, -0.5, 0.0, 1.0]
    assert [r["actual_controlled"] for r in rows] == [0.25, -0.75, -0.5, 0.5]
    assert summary == {"points": 2, "shards": 1, "seconds": 2.0, "seconds_per_point": 1.0, "steps": 7,
                       "lr": pytest.approx(0.1), "control_seconds": 1.0,
                       "control_drift": {"0": 0.25, "4": 0.5}}
    with pytest.raises(ValueError, match="overlap or are out of order"):
        gather_loo([shard, shard], control=control)


def test_cnn_figure_table_two_baselines_per_test_point():
    sel = [{"rank": r, "train_index": i, "train_label": i % 10, "predicted": p}
           for r, (i, p) in enumerate([(4, 0.3), (1, -0.2), (6, 0.1)])]
    actual = {4: 0.25, 1: -0.1, 6: 0.2}
    drift = 0.05
    loo = [{"test_index": "8", "train_index": str(i), "actual": str(a), "actual_controlled": str(a - drift)}
           for i, a in actual.items()]
    info = {"test_index": 8, "label": 2, "predicted_label": 3, "correct": False, "test_loss": 1.5,
            "seconds": 4.0, "cg_converged": True, "cg_iterations": 9, "min_curvature": 0.1,
            "damping": 0.01, "hvp_batch_size": 100}
    loo_info = {"control_drift": {"8": drift}, "steps": 20, "lr": 1e-6, "seconds": 6.0,
                "seconds_per_point": 2.0, "control_seconds": 2.0, "points": 3, "shards": 1}
    train = {"settings": {"train": {"lr": 1e-4, "batch_size": 500}}, "n_train": 50, "steps": 60,
             "device": "cpu", "train_accuracy": 0.9, "test_accuracy": 0.8, "train_objective": 0.3,
             "seconds": 10.0, "seconds_per_step": 0.1}
    rows, rec = cnn_figure_table("e", [sel], [info], loo, loo_info, train, 3, 1e-3)
    assert len(rows) == 6 and [r["panel"] for r in rows] == ["CNN"] * 3 + ["CNN (controlled)"] * 3
    assert [r["actual"] for r in rows[:3]] == [0.25, -0.1, 0.2]
    assert [r["actual"] for r in rows[3:]] == [float(str(a - drift)) for a in (0.25, -0.1, 0.2)]
    paper, ctl = rec["panels"]
    want = agreement([0.3, -0.2, 0.1], [0.25, -0.1, 0.2])
    assert paper["pearson"] == want["pearson"] and paper["baseline"] == "theta_hat"
    assert ctl["baseline"] == "control" and paper["pearson_controlled"] == ctl["pearson"]
    assert math.isclose(ctl["pearson"], paper["pearson"], rel_tol=1e-12)  # a constant shift
    assert paper["control_drift"] == drift and rec["protocol"]["loo_lr"] == 1e-6
    assert rec["timings"]["influence_seconds"] == {"8": 4.0} and rec["test_indices"] == [8]
