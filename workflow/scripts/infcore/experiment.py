"""The workflow's steps as plain functions, plus the config logic the Snakefile needs.

Nothing here knows about Snakemake or files: the rule scripts in ``workflow/scripts/`` load
inputs, call one function from here and write what it returns. The config helpers
(:func:`canonical`, :func:`owners`, :func:`check_config`, :func:`shard_indices`) are used by
the Snakefile before any job runs.

Conventions (DESIGN.md): ``pred_i = (1/n) g_test^T (H + lambda I)^{-1} g_i`` predicts
``actual_i = L_test(theta_-i) - L_test(theta_hat)``, the change of the unregularized test loss
when training point i is removed; theta_-i is the certified optimum without point i.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: the Snakefile imports this module
    import torch

Log = Callable[[str], None]

# Settings that decide a dataset / a fitted model. Experiments whose settings agree on these
# share the files of the first such experiment in config order (see ``owners``).
DATA_FIELDS = ("dataset",)
MODEL_FIELDS = ("dataset", "model", "l2", "fit")

# Panel titles of the paper's Figure 2, by method.
PANELS = {"cg": "Linear (exact)", "lissa": "Linear (approx)"}


class ConfigError(ValueError):
    """A config value is out of range; the message names the key (``experiments.X.key``)."""


# ------------------------------------------------------------------------------ config


def canonical(obj):
    """A copy of ``obj`` with every mapping's keys sorted (JSON types only).

    Used for rule params, so that equal settings compare and print equal and Snakemake's
    params rerun trigger fires exactly when a setting changes.
    """
    return json.loads(json.dumps(obj, sort_keys=True))


DATASET_KEYS = {
    "mnist": ("kind", "validation_size", "max_train", "max_test"),
    # model: cnn reads the paper's random subset of the training images instead
    "mnist_cnn": ("kind", "validation_size", "fraction", "subset_seed"),
    "random": ("kind", "n_features", "n_classes", "n_train", "n_test", "seed", "input_std",
               "teacher_scale", "labels", "label_noise"),
}


def normalize(exp: dict) -> dict:
    """Canonical experiment settings; the dataset keeps only the keys of its kind (the schema
    fills defaults for both kinds), so equal datasets compare equal."""
    exp = canonical(exp)
    ds = exp["dataset"]
    cnn = exp.get("model") == "cnn"
    kind = "mnist_cnn" if cnn and ds["kind"] == "mnist" else ds["kind"]
    exp["dataset"] = {k: ds.get(k) for k in DATASET_KEYS[kind]}
    # the schema fills every model's sections with defaults: keep this model's only
    for section in (("fit", "cg", "lissa", "loo") if cnn else ("cnn",)):
        exp.pop(section, None)
    return canonical(exp)


def settings_of(exp: dict, fields: Sequence[str]) -> dict:
    """The canonical sub-dict of an experiment's settings named by ``fields``."""
    return canonical({f: exp.get(f) for f in fields})


def owners(experiments: dict, fields: Sequence[str]) -> dict[str, str]:
    """Map each experiment to the first experiment (config order) with equal ``fields``.

    ``owners(exps, MODEL_FIELDS)["mnist_logreg_tests"] == "mnist_logreg"`` when both use the
    same data, model and L2: the second reuses the first's trained model.
    """
    first: dict[str, str] = {}
    out = {}
    for name, exp in experiments.items():
        key = json.dumps(settings_of(exp, fields), sort_keys=True)
        out[name] = first.setdefault(key, name)
    return out


def dataset_shape(ds: dict, mnist_counts: tuple[int, int] | None = None,
                  model: str = "logreg") -> tuple[int, int]:
    """(n_train, n_test) an experiment's dataset settings give.

    For MNIST, ``mnist_counts`` are the image counts in the raw files (None: the canonical
    60000 / 10000); the first ``validation_size`` training images are held out. For
    ``model='cnn'`` the training set is the share ``fraction`` of the rest
    (``infcore.cnn.small_mnist_indices``: 5,500 for the paper's 0.1).
    """
    if ds["kind"] == "random":
        return int(ds["n_train"]), int(ds["n_test"])
    n_all, n_test = mnist_counts or (60000, 10000)
    n_train = n_all - int(ds.get("validation_size", 5000))
    if model == "cnn":
        return int(n_train * float(ds.get("fraction", 1.0))), n_test
    if ds.get("max_train") is not None:
        n_train = min(n_train, int(ds["max_train"]))
    if ds.get("max_test") is not None:
        n_test = min(n_test, int(ds["max_test"]))
    return n_train, n_test


def check_config(config: dict, mnist_counts: tuple[int, int] | None = None) -> None:
    """Range checks the JSON schema cannot express; raises ConfigError listing every problem.

    Each message names the key, e.g. ``experiments.mnist_logreg.top_k = 60000 exceeds n_train
    = 55000``.
    """
    errors = []
    experiments = config.get("experiments", {})
    for name, exp in experiments.items():
        key = f"experiments.{name}"
        ds = exp["dataset"]
        if ds["kind"] == "mnist":
            extra = [k for k in DATASET_KEYS["random"] if k in ds and k not in DATASET_KEYS["mnist"]
                     and k in ("n_features", "n_classes", "n_train", "n_test")]
            for k in extra:
                errors.append(f"{key}.dataset.{k} applies to random datasets only "
                              "(MNIST: use max_train / max_test)")
            n_all = (mnist_counts or (60000, 10000))[0]
            vs = int(ds.get("validation_size", 5000))
            if vs >= n_all:
                errors.append(f"{key}.dataset.validation_size = {vs} leaves no training points "
                              f"(the MNIST files hold {n_all} training images)")
                continue
        model = exp.get("model", "logreg")
        if model == "cnn":
            cnn_errors = _check_cnn(key, exp, ds)
            errors += cnn_errors
            if cnn_errors and ds["kind"] != "mnist":
                continue
        else:
            for k, default in (("fraction", 1.0), ("subset_seed", 0)):
                if ds.get(k, default) != default:
                    errors.append(f"{key}.dataset.{k} applies to model: cnn only "
                                  "(linear models: use max_train)")
        n_train, n_test = dataset_shape(ds, mnist_counts, model)
        for i, t in enumerate(exp["test_indices"]):
            if not 0 <= int(t) < n_test:
                errors.append(f"{key}.test_indices[{i}] = {t} is outside the test set "
                              f"(n_test = {n_test}, valid indices 0..{n_test - 1})")
        dup = sorted({t for t in exp["test_indices"] if exp["test_indices"].count(t) > 1})
        if dup:
            errors.append(f"{key}.test_indices repeats {dup}")
        if int(exp["top_k"]) > n_train:
            errors.append(f"{key}.top_k = {exp['top_k']} exceeds n_train = {n_train}")
        lissa = exp.get("lissa", {})
        if int(lissa.get("batch_size", 1)) > n_train:
            errors.append(f"{key}.lissa.batch_size = {lissa['batch_size']} exceeds n_train = {n_train}")
    pf = config.get("paper_figure") or {}
    for role in ("linear", "cnn"):
        target = pf.get(role)
        if role == "linear" and target is not None and target not in experiments:
            errors.append(f"paper_figure.linear = {target!r} is not an experiment "
                          f"(experiments: {', '.join(experiments) or 'none'})")
        want = "cnn" if role == "cnn" else "logreg"
        if target is not None and target in experiments and experiments[target].get("model", "logreg") != want:
            errors.append(f"paper_figure.{role} = {target!r} is an experiment with model: "
                          f"{experiments[target].get('model', 'logreg')}, not {want}")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _check_cnn(key: str, exp: dict, ds: dict) -> list[str]:
    """Checks of a ``model: cnn`` experiment the schema cannot express."""
    errors = []
    if ds["kind"] != "mnist":
        return [f"{key}.dataset.kind = {ds['kind']!r}: model: cnn needs kind: mnist (28x28 images)"]
    for k in ("max_train", "max_test"):
        if ds.get(k) is not None:
            errors.append(f"{key}.dataset.{k} applies to linear models only (model: cnn: use fraction)")
    c = exp.get("cnn") or {}
    tr = c.get("train") or {}
    steps, factors = tr.get("decay_steps", [110000, 220000]), tr.get("decay_factors", [0.1, 0.01])
    if len(steps) != len(factors):
        errors.append(f"{key}.cnn.train.decay_factors has {len(factors)} entries but "
                      f"{key}.cnn.train.decay_steps has {len(steps)} (one factor per decay step)")
    if list(steps) != sorted(steps):
        errors.append(f"{key}.cnn.train.decay_steps = {steps} is not ascending")
    return errors


def parse_scatteritem(item: str) -> tuple[int, int]:
    """``"2-of-4"`` -> (2, 4) (Snakemake's scatteritem, 1-based)."""
    i, _, n = item.partition("-of-")
    i, n = int(i), int(n)
    if not 1 <= i <= n:
        raise ValueError(f"bad scatter item {item!r}")
    return i, n


def shard_indices(selections: Iterable, shard: int, shards: int) -> np.ndarray:
    """Training points of LOO shard ``shard`` (1-based) of ``shards``.

    The union of all selected points, sorted ascending, cut into ``shards`` contiguous parts
    of near-equal size (``numpy.array_split``); shards may be empty when there are fewer
    points than shards. Joining the shards in order gives the sorted union back.
    """
    union = np.unique(np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in selections]
                                     or [np.zeros(0, np.int64)]))
    part = np.array_split(union, shards)[shard - 1]
    return part.copy()


# ---------------------------------------------------------------------------- progress


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
    """Logs ``what: done/total (pct), rate unit/s, elapsed, ETA`` at most every ``every`` s."""

    def __init__(self, log: Log, what: str, total: int, unit: str = "steps", every: float = 10.0):
        self.log, self.what, self.total, self.unit, self.every = log, what, int(total), unit, every
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def __call__(self, done: int, total: int | None = None, extra: str = "") -> None:
        now = time.perf_counter()
        total = self.total if total is None else int(total)
        if now - self.last < self.every and done < total:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else math.inf
        eta = (total - done) / rate if rate > 0 else math.inf
        pct = 100.0 * done / total if total else 100.0
        self.log(f"{self.what}: {done}/{total} {self.unit} ({pct:.0f}%), {rate:.3g} {self.unit}/s, "
                 f"elapsed {_fmt_seconds(el)}, ETA {_fmt_seconds(eta)}" + (f", {extra}" if extra else ""))


class CGProgress:
    """CG callback: logs iteration, residual, rate and an ETA from the residual's decay."""

    def __init__(self, log: Log, tol: float, every: float = 10.0):
        self.log, self.tol, self.every = log, tol, every
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.first: float | None = None

    def __call__(self, it: int, rel: float) -> None:
        if self.first is None:
            self.first = rel
        now = time.perf_counter()
        if now - self.last < self.every and rel > self.tol:
            return
        self.last = now
        el = now - self.t0
        rate = it / el if el > 0 else math.inf
        eta = math.inf
        if 0 < rel < 1 and it > 0 and rel > self.tol:  # residual ~ r^it: iterations left
            per_it = math.log(rel) / it
            if per_it < 0:
                eta = (math.log(self.tol) - math.log(rel)) / per_it / rate
        self.log(f"CG: iteration {it}, relative residual {rel:.3e} (tol {self.tol:g}), "
                 f"{rate:.3g} it/s, elapsed {_fmt_seconds(el)}, ETA {_fmt_seconds(eta) if rel > self.tol else '0s'}")


# ------------------------------------------------------------------------------- steps


def make_objective(ds, exp: dict):
    """The training objective of an experiment (``model: logreg``: multinomial logistic
    regression without bias, L2 ``exp['l2']``)."""
    from .objective import LogisticObjective

    model = exp.get("model", "logreg")
    if model != "logreg":
        raise ValueError(f"model {model!r} has no objective here (only 'logreg')")
    return LogisticObjective(ds.X_train, ds.y_train, ds.n_classes, exp["l2"])


def train(obj, ds, fit_settings: dict, log: Log = print) -> tuple[torch.Tensor, dict]:
    """Fit to a certified optimum; returns theta and the JSON record. Raises if the gradient
    max-norm did not get below ``fit_settings['tol']``."""
    from .fit import fit

    res = fit(obj, tol=fit_settings["tol"], max_lbfgs=fit_settings["max_lbfgs"],
              max_newton=fit_settings["max_newton"], log=log)
    theta = res.theta
    record = {
        **res.summary(),
        "tol": fit_settings["tol"],
        "n_train": obj.n,
        "n_test": ds.n_test,
        "dim": obj.dim,
        "l2": obj.l2,
        "train_accuracy": obj.accuracy(theta, ds.X_train, ds.y_train),
        "test_accuracy": obj.accuracy(theta, ds.X_test, ds.y_test),
        "train_data_loss": float(obj.data_loss(theta, ds.X_train, ds.y_train)),
        "test_loss": float(obj.data_loss(theta, ds.X_test, ds.y_test)),
    }
    if not res.converged:
        raise RuntimeError(f"fit did not converge: max|grad| = {res.grad_maxnorm:.3g} > tol = "
                           f"{fit_settings['tol']:g} after {res.iterations} iterations "
                           f"(raise fit.max_newton or fit.max_lbfgs)")
    return theta, record


def describe_test_point(obj, theta, ds, t: int) -> dict:
    """Label, prediction, probability of the true class and loss of test point t."""
    x, y = ds.X_test[t:t + 1], ds.y_test[t:t + 1]
    p = obj.probs(theta, x)[0]
    return {
        "test_index": int(t),
        "label": int(y),
        "predicted_label": int(p.argmax()),
        "correct": bool(int(p.argmax()) == int(y)),
        "p_label": float(p[int(y)]),
        "test_loss": float(obj.data_loss(theta, x, y)),
    }


def influence_cg(obj, theta, ds, t: int, cg: dict, log: Log = print) -> tuple[torch.Tensor, dict]:
    """Predicted test-loss change at test point t for removing each training point, by CG.

    Returns ``pred`` (n,) and diagnostics. Raises ``CGNotConvergedError`` when CG stops
    above ``cg['tol']``.
    """
    from .influence import inverse_hvp_cg, predicted_loss_change

    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    log(f"test point {t}: ||g_test|| = {float(g.norm()):.4g}; CG on dim {obj.dim}, n = {obj.n}")
    res = inverse_hvp_cg(obj, theta, g, damping=cg["damping"], tol=cg["tol"], maxiter=cg["maxiter"],
                         preconditioner=cg["preconditioner"], callback=CGProgress(log, cg["tol"]))
    log(f"CG: {res.message}; {res.iterations} iterations in {res.seconds:.2f} s")
    res.raise_if_not_converged()
    t0 = time.perf_counter()
    pred = predicted_loss_change(obj, theta, res.x)
    pred_seconds = time.perf_counter() - t0
    trace = res.residuals
    step = max(1, len(trace) // 200)
    diag = {
        **describe_test_point(obj, theta, ds, t),
        **res.summary(),
        "final_residual": res.residual,
        "residual_trace": [[i, r] for i, r in enumerate(trace)][::step],
        "tol": cg["tol"],
        "damping": cg["damping"],
        "preconditioner": cg["preconditioner"],
        "g_test_norm": float(g.norm()),
        "s_test_norm": float(res.x.norm()),
        "predict_seconds": pred_seconds,
        "n_train": obj.n,
    }
    return pred, diag


def influence_lissa(obj, theta, ds, t: int, idx: torch.Tensor, lissa: dict,
                    log: Log = print) -> tuple[torch.Tensor, dict]:
    """LiSSA predictions at test point t for the training points ``idx``; diagnostics include
    the scale, power-iteration estimate of the largest Hessian eigenvalue (full data, with
    damping), the largest single-point eigenvalue (logistic: closed form) and the norm trace.
    """
    from .influence import inverse_hvp_lissa, largest_example_eigenvalue, predicted_loss_change
    from .solvers import power_iteration

    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    t0 = time.perf_counter()
    # a diagnostic: three digits suffice (each iteration is a full-data HVP)
    lam_full = power_iteration(lambda v: obj.hvp(theta, v) + lissa["damping"] * v, obj.dim,
                               iters=100, tol=1e-3, seed=lissa["seed"], dtype=theta.dtype)
    try:
        lam_point = largest_example_eigenvalue(obj, theta) + lissa["damping"]
    except TypeError:
        lam_point = None
    eig_seconds = time.perf_counter() - t0
    log(f"largest eigenvalue of H + damping I: {lam_full:.4g} (power iteration); largest single-point "
        f"eigenvalue: {lam_point if lam_point is None else f'{lam_point:.4g}'}; scale = {lissa['scale']:g}")
    if lam_point is not None and lissa["batch_size"] == 1 and lissa["scale"] <= lam_point / 2:
        log(f"note: scale {lissa['scale']:g} is below half the largest single-point eigenvalue "
            f"{lam_point:.4g}: steps that sample such points expand the iterate (the run stops with "
            "an error if it diverges)")
    res = inverse_hvp_lissa(obj, theta, g, depth=lissa["depth"], scale=lissa["scale"],
                            repeats=lissa["repeats"], batch_size=lissa["batch_size"],
                            damping=lissa["damping"], seed=lissa["seed"],
                            progress=Progress(log, "LiSSA", lissa["depth"], unit="steps"))
    pred = predicted_loss_change(obj, theta, res.x, idx)
    trace = res.norm_trace
    step = max(1, len(trace) // 100)
    diag = {
        **describe_test_point(obj, theta, ds, t),
        **res.summary(),
        "batch_size": lissa["batch_size"],
        "seed": lissa["seed"],
        "largest_eigenvalue": lam_full,
        "largest_example_eigenvalue": lam_point,
        "eigenvalue_seconds": eig_seconds,
        "norm_trace": [[int(s), float(v)] for s, v in trace][::step],
        "s_test_norm": float(res.x.norm()),
        "repeat_spread": float((res.per_repeat - res.x[:, None]).norm(dim=0).mean() / max(float(res.x.norm()), 1e-300)),
        "n_points": int(idx.numel()),
    }
    log(f"LiSSA: {res.seconds:.1f} s, final norm {diag['final_norm']:.4g}, relative spread over repeats "
        f"{diag['repeat_spread']:.3g}")
    return pred, diag


def loo_factor(obj, theta, log: Log = print) -> tuple[torch.Tensor, dict]:
    """Cholesky factor of the LOO chord matrix at theta_hat, shared by every LOO shard of the
    model (stored in float32: it only sets the step, the certificate is float64)."""
    import torch

    from .loo import chord_factor

    t0 = time.perf_counter()
    L = chord_factor(obj, theta)
    seconds = time.perf_counter() - t0
    log(f"chord factor ({obj.dim} x {obj.dim}) in {seconds:.1f} s")
    return L.to(torch.float32), {"dim": obj.dim, "n": obj.n, "seconds": seconds}


def loo_shard(obj, theta, ds, indices: torch.Tensor, test_indices: Sequence[int], loo: dict,
              log: Log = print, factor: torch.Tensor | None = None) -> dict:
    """Certified LOO retraining for ``indices``; test losses at every test point.

    Returns a dict of tensors: indices (m,), test_indices (T,), test_losses (m, T) =
    L_test(theta_-i) per test point, base_losses (T,) = L_test(theta_hat), grad_maxnorm,
    steps, converged (m,), and seconds. Raises when a point's certificate misses ``tol``.
    """
    import torch

    from .loo import loo_retrain

    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    tidx = torch.as_tensor(list(test_indices), dtype=torch.long)
    Xt, yt = ds.X_test[tidx], ds.y_test[tidx]
    base = obj.example_losses(theta, Xt, yt)
    m = int(indices.numel())
    out = {"indices": indices.clone(), "test_indices": tidx, "base_losses": base,
           "test_losses": torch.zeros(m, len(tidx), dtype=theta.dtype),
           "grad_maxnorm": torch.zeros(m, dtype=theta.dtype), "steps": torch.zeros(m, dtype=torch.long),
           "converged": torch.ones(m, dtype=torch.bool), "seconds": 0.0, "setup_seconds": 0.0}
    if m == 0:
        log("empty shard: nothing to retrain")
        return out
    log(f"LOO retraining of {m} points (n = {obj.n}, dim = {obj.dim}, tol {loo['tol']:g})")
    res = loo_retrain(obj, theta, indices, tol=loo["tol"], max_steps=loo["max_steps"],
                      progress=lambda done, total, msg: log(f"LOO: {msg}"), log=log, factor=factor)
    out.update(test_losses=obj.example_losses(res.thetas, Xt, yt), grad_maxnorm=res.grad_maxnorm,
               steps=res.steps, converged=res.converged, seconds=res.seconds,
               setup_seconds=res.setup_seconds)
    bad = (~res.converged).nonzero().reshape(-1)
    if bad.numel():
        worst = int(res.grad_maxnorm.argmax())
        raise RuntimeError(f"LOO retraining did not converge for {bad.numel()} of {m} points: "
                           f"worst max|grad| {float(res.grad_maxnorm[worst]):.3g} (train index "
                           f"{int(indices[worst])}) > tol {loo['tol']:g} after {loo['max_steps']} steps "
                           "(raise loo.max_steps)")
    log(f"LOO: {m} points in {res.seconds:.1f} s, max certificate {float(res.grad_maxnorm.max()):.3g}")
    return out


def gather_loo(shards: Sequence[dict]) -> tuple[list[dict], dict]:
    """Join shards (in order) into rows ``train_index, test_index, actual, ...`` and a summary.

    ``actual = L_test(theta_-i) - L_test(theta_hat)`` for every removed point and test point.
    """
    rows = []
    seconds = setup = 0.0
    for sh in shards:
        seconds += float(sh["seconds"])
        setup += float(sh["setup_seconds"])
        for j, t in enumerate(sh["test_indices"].tolist()):
            base = float(sh["base_losses"][j])
            for r, i in enumerate(sh["indices"].tolist()):
                loss = float(sh["test_losses"][r, j])
                rows.append({"train_index": i, "test_index": t, "actual": loss - base,
                             "test_loss_without": loss, "test_loss": base,
                             "grad_maxnorm": float(sh["grad_maxnorm"][r]),
                             "steps": int(sh["steps"][r]), "converged": bool(sh["converged"][r])})
    rows.sort(key=lambda r: (r["test_index"], r["train_index"]))
    idx = [int(i) for sh in shards for i in sh["indices"].tolist()]
    if idx != sorted(set(idx)):
        raise ValueError("LOO shards overlap or are out of order")
    gm = [float(g) for sh in shards for g in sh["grad_maxnorm"].tolist()]
    summary = {"points": len(idx), "shards": len(shards), "seconds": seconds,
               "setup_seconds": setup, "seconds_per_point": seconds / len(idx) if idx else 0.0,
               "max_grad_maxnorm": max(gm) if gm else 0.0,
               "all_converged": all(bool(c) for sh in shards for c in sh["converged"].tolist())}
    return rows, summary


def figure_rows(experiment: str, t: int, selection: Sequence[dict], lissa_pred: dict[int, float],
                loo: Sequence[dict]) -> list[dict]:
    """The long table behind one test point's panels.

    ``selection``: rows with rank, train_index, train_label, predicted (CG); ``lissa_pred``: train_index ->
    LiSSA prediction; ``loo``: gathered LOO rows (all test points). One row per (method,
    selected point): experiment, test_index, panel, method, rank, train_index, train_label,
    actual, predicted, grad_maxnorm.
    """
    actual = {int(r["train_index"]): r for r in loo if int(r["test_index"]) == int(t)}
    rows = []
    for method in ("cg", "lissa"):
        for s in selection:
            i = int(s["train_index"])
            if i not in actual:
                raise KeyError(f"no LOO result for train point {i} at test point {t}")
            pred = float(s["predicted"]) if method == "cg" else float(lissa_pred[i])
            rows.append({"experiment": experiment, "test_index": int(t), "panel": PANELS[method],
                         "method": method, "rank": int(s["rank"]), "train_index": i,
                         "train_label": int(s.get("train_label", -1)),
                         "actual": float(actual[i]["actual"]), "predicted": pred,
                         "grad_maxnorm": float(actual[i]["grad_maxnorm"])})
    return rows
