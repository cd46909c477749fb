"""infcore.config: the config checks and canonical forms the Snakefile uses before any job runs."""

from __future__ import annotations

import pytest
from infcore.config import (
    MODEL_FIELDS,
    ConfigError,
    canonical,
    check_config,
    dataset_shape,
    normalize,
    owners,
    parse_scatteritem,
    shard_indices,
)

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


def test_config_and_data_helpers_import_without_torch():
    """workflow/rules/common.smk imports these while Snakemake parses the workflow."""
    import subprocess
    import sys

    code = ("import sys; import infcore.config, infcore.data, infcore.mnist; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).parents[1] / "workflow" / "scripts"))
    assert res.returncode == 0, res.stderr
