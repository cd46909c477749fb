"""The workflow's steps for every model the pipeline rules run (linear models and the
certified CNN), as plain functions written against the objective interface.

Nothing here knows about Snakemake or files: a rule script in ``workflow/scripts/`` loads
its inputs, calls one step from here and writes what it returns (config checking is in
:mod:`infcore.config`, the rows behind the figures in :mod:`infcore.tables`).

Conventions (docs/design.md): ``pred_i = (1/n) g_test^T (H + lambda I)^{-1} g_i`` predicts
``actual_i = L_test(theta_-i) - L_test(theta_hat)``, the change of the unregularized test loss
when training point i is removed; theta_-i is the certified optimum without point i.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch

from .certify import certified_fit
from .fit import fit
from .influence import (
    gauss_newton_inverse,
    inverse_hvp_cg,
    inverse_hvp_lissa,
    largest_example_eigenvalue,
    predicted_loss_change,
)
from .lissa_diagnostics import LissaConvergenceWarning, lissa_diagnostics, panel_note
from .loo import chord_factor, loo_retrain
from .metrics import agreement
from .objective import LogisticObjective
from .progress import CGProgress, Log, Progress
from .solvers import power_iteration


def make_objective(ds, exp: dict):
    """The training objective of an experiment: ``model: logreg``, multinomial logistic
    regression without bias, L2 ``exp['l2']``; ``model: cnn`` with ``cnn.protocol:
    certified``, the All-CNN-C objective (L2 on the weights) in float64."""
    model = exp.get("model", "logreg")
    if model == "logreg":
        return LogisticObjective(ds.X_train, ds.y_train, ds.n_classes, exp["l2"])
    if model == "cnn" and (exp.get("cnn") or {}).get("protocol") == "certified":
        from .cnn.certified import CNNObjective

        c = exp["cnn"]
        return CNNObjective(ds.X_train, ds.y_train, exp["l2"], width=c["width"],
                            n_classes=ds.n_classes, curvature=c.get("curvature", "exact"))
    raise ValueError(f"model {model!r} has no pipeline objective (logreg, or cnn with cnn.protocol: "
                     "certified; the CNN's paper protocol runs through the cnn_* rules)")


def initial_point(obj, exp: dict, log: Log = print) -> torch.Tensor | None:
    """Where the fit starts: zeros for convex models (None), else the network's
    initialisation (``cnn.train.init_seed``) moved by ``fit.start_steps`` Adam steps."""
    if obj.convex:
        return None
    from .cnn.train import train as adam_train

    f, c = exp["fit"], exp["cnn"]
    images = obj.images(obj.X)
    res = adam_train(images, obj.y, f["start_steps"], batch_size=min(f["start_batch_size"], obj.n),
                     lr=f["start_lr"], decay_steps=(), decay_factors=(), l2=obj.l2,
                     seed=c["train"]["seed"], init_seed=c["train"]["init_seed"], width=obj.width,
                     log_every=0)
    theta0 = res.theta.to(obj.X.dtype)
    log(f"start: {f['start_steps']} Adam steps (lr {f['start_lr']:g}, batch {f['start_batch_size']}) in "
        f"{res.seconds:.1f} s, loss {float(obj.loss(theta0)):.6g}")
    return theta0


def train(obj, ds, fit_settings: dict, log: Log = print,
          theta0: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Fit to a certified optimum; returns theta and the JSON record. Convex objectives: a
    stationary point to ``max|grad| <= tol`` (L-BFGS then Newton-CG); others: also a positive
    definite Hessian on the complement of the null directions (:func:`certified_fit`, from
    ``theta0``). Raises if the gradient max-norm did not get below ``fit_settings['tol']``, or
    if the point is not a local minimum."""
    if obj.convex:
        res = fit(obj, tol=fit_settings["tol"], max_lbfgs=fit_settings["max_lbfgs"],
                  max_newton=fit_settings["max_newton"], log=log)
    else:
        res = certified_fit(obj, obj.zeros() if theta0 is None else theta0, tol=fit_settings["tol"],
                            lbfgs_tol=fit_settings["lbfgs_tol"], max_lbfgs=fit_settings["max_lbfgs"],
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
                           f"{fit_settings['tol']:g} after {res.iterations if obj.convex else record['iterations']} "
                           "iterations (raise fit.max_newton or fit.max_lbfgs)")
    if not obj.convex and not record["is_local_minimum"]:
        raise RuntimeError(f"fit stopped at a saddle: max|grad| {res.grad_maxnorm:.3g} but the Hessian's "
                           f"smallest eigenvalue off the null directions is {record['hessian_min_eigenvalue']:.3g} "
                           "<= 0 (raise fit.max_newton, or change fit.start_steps / cnn.train.init_seed)")
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


def influence_cg(obj, theta, ds, t: int, cg: dict, log: Log = print,
                 factor: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Predicted test-loss change at test point t for removing each training point, by CG
    (``factor``: the LOO chord factor, for ``cg.preconditioner: chord``).

    Returns ``pred`` (n,) and diagnostics. Raises ``CGNotConvergedError`` when CG stops
    above ``cg['tol']``.
    """
    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    log(f"test point {t}: ||g_test|| = {float(g.norm()):.4g}; CG on dim {obj.dim}, n = {obj.n}")
    res = inverse_hvp_cg(obj, theta, g, damping=cg["damping"], tol=cg["tol"], maxiter=cg["maxiter"],
                         preconditioner=cg["preconditioner"], callback=CGProgress(log, cg["tol"]),
                         factor=factor)
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


def influence_gn(obj, theta, ds, t: int, idx: torch.Tensor, cg_pred: torch.Tensor, damping: float,
                 log: Log = print) -> tuple[torch.Tensor, dict]:
    """The Gauss-Newton influence at test point t, a second estimate beside CG's: ``(1/n) g_i^T
    (G + diag(r) + damping I)^+ g_test`` (:func:`infcore.influence.gauss_newton_inverse`, an
    explicit solve; ``damping``: CG's). Returns the predictions of the training points ``idx``
    and diagnostics with its agreement with the exact-Hessian (CG) predictions ``cg_pred`` (n,)
    over all training points and over ``idx``: Pearson, slope of GN on CG, relative difference
    ``||gn - cg|| / ||cg||``."""
    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    t0 = time.perf_counter()
    s, spectrum = gauss_newton_inverse(obj, theta, g, damping=damping)
    solve_seconds = time.perf_counter() - t0
    pred = predicted_loss_change(obj, theta, s)
    seconds = time.perf_counter() - t0
    cg_pred = cg_pred.to(pred.dtype)

    def versus_cg(a: torch.Tensor, b: torch.Tensor) -> dict:
        stats = agreement(a, b)
        return {"pearson": stats["pearson"], "slope": stats["slope"], "n_points": stats["n_points"],
                "rel_difference": float((a - b).norm() / b.norm().clamp_min(1e-300))}

    diag = {
        **describe_test_point(obj, theta, ds, t),
        "method": "gauss_newton",
        "damping": damping,
        "seconds": seconds,
        "solve_seconds": solve_seconds,
        "s_test_norm": float(s.norm()),
        "gauss_newton_spectrum": spectrum,
        "vs_cg_all": versus_cg(pred, cg_pred),
        "vs_cg_selected": versus_cg(pred[idx], cg_pred[idx]),
        "n_points": int(idx.numel()),
        "n_train": obj.n,
    }
    log(f"Gauss-Newton matrix + L2: eigenvalues {spectrum['min_eigenvalue']:.3g} to {spectrum['max_eigenvalue']:.4g}, "
        f"{spectrum['null_directions']} null directions beyond the objective's (pseudo-inverse)")
    log(f"Gauss-Newton influence in {seconds:.2f} s (solve {solve_seconds:.2f} s); against CG over all "
        f"{obj.n} points: Pearson {diag['vs_cg_all']['pearson']:.4f}, relative difference "
        f"{diag['vs_cg_all']['rel_difference']:.3g}; over the {idx.numel()} selected: Pearson "
        f"{diag['vs_cg_selected']['pearson']:.4f}, slope {diag['vs_cg_selected']['slope']:.4f}")
    return pred[idx], diag


def influence_lissa(obj, theta, ds, t: int, idx: torch.Tensor, lissa: dict,
                    log: Log = print) -> tuple[torch.Tensor, dict]:
    """LiSSA predictions at test point t for the training points ``idx``; diagnostics include
    the scale, power-iteration estimate of the largest Hessian eigenvalue (full data, with
    damping), the largest single-point eigenvalue (logistic: closed form), the norm trace and,
    under ``convergence``, :func:`infcore.lissa_diagnostics.lissa_diagnostics`' verdict on
    them (a :class:`LissaConvergenceWarning` per problem it finds; ``note`` marks the panel).
    """
    g = obj.data_grad(theta, ds.X_test[t:t + 1], ds.y_test[t:t + 1])
    t0 = time.perf_counter()
    # a diagnostic: three digits suffice (each iteration is a full-data HVP)
    lam_full = power_iteration(lambda v: obj.hvp(theta, v) + lissa["damping"] * v, obj.dim,
                               iters=100, tol=1e-3, seed=lissa["seed"], dtype=theta.dtype)
    lam_point = largest_example_eigenvalue(obj, theta)
    if lam_point is not None:
        lam_point += lissa["damping"]
    eig_seconds = time.perf_counter() - t0
    log(f"largest eigenvalue of H + damping I: {lam_full:.4g} (power iteration); largest single-point "
        f"eigenvalue: {lam_point if lam_point is None else f'{lam_point:.4g}'}; scale = {lissa['scale']:g}")
    res = inverse_hvp_lissa(obj, theta, g, depth=lissa["depth"], scale=lissa["scale"],
                            repeats=lissa["repeats"], batch_size=lissa["batch_size"],
                            damping=lissa["damping"], seed=lissa["seed"],
                            progress=Progress(log, "LiSSA", lissa["depth"], unit="steps"))
    pred = predicted_loss_change(obj, theta, res.x, idx)
    check = lissa_diagnostics(scale=lissa["scale"], depth=lissa["depth"], batch_size=lissa["batch_size"],
                              l2=obj.l2, damping=lissa["damping"], largest_eigenvalue=lam_full,
                              largest_example_eigenvalue=lam_point, norm_trace=res.norm_trace,
                              convex=obj.convex)
    log(f"LiSSA: {check['status']}; contraction regime {check['contraction_regime']}")
    for w in check["warnings"]:
        warnings.warn(f"LiSSA at test point {t}: {w}", LissaConvergenceWarning, stacklevel=2)
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
        "convergence": check,
        "note": panel_note(check),
    }
    log(f"LiSSA: {res.seconds:.1f} s, final norm {diag['final_norm']:.4g}, relative spread over repeats "
        f"{diag['repeat_spread']:.3g}")
    return pred, diag


def loo_factor(obj, theta, log: Log = print) -> tuple[torch.Tensor, dict]:
    """Cholesky factor of the LOO chord matrix at theta_hat, shared by every LOO shard of the
    model (stored in float32: it only sets the step, the certificate is float64)."""
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
    steps, converged (m,), and seconds. Raises when a point's certificate misses ``tol``, except
    for non-convex objectives, whose points may leave the influence function's basin
    (``left_basin``) or stop at the step budget: they are reported in the outputs, uncertified,
    and the figures leave them out of the agreement with a note.
    """
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
    if not obj.convex:  # the basin check: distance moved against the first (influence) step
        out.update(basin_ratio=res.distance / res.first_step.clamp_min(1e-300), left_basin=res.left_basin)
        far = (out["basin_ratio"] - 1).abs() > 1.0
        log(f"LOO basin check: |theta_-i - theta_hat| / |first chord step| in "
            f"[{float(out['basin_ratio'].min()):.3g}, {float(out['basin_ratio'].max()):.3g}]; "
            f"{int(far.sum())} of {m} outside [0, 2]; {int(res.left_basin.sum())} stopped beyond the "
            f"basin limit, {bad.numel()} not certified (reported, not dropped)")
    if bad.numel() and obj.convex:
        worst = int(res.grad_maxnorm.argmax())
        raise RuntimeError(f"LOO retraining did not converge for {bad.numel()} of {m} points: "
                           f"worst max|grad| {float(res.grad_maxnorm[worst]):.3g} (train index "
                           f"{int(indices[worst])}) > tol {loo['tol']:g} after {loo['max_steps']} steps "
                           "(raise loo.max_steps)")
    log(f"LOO: {m} points in {res.seconds:.1f} s, max certificate {float(res.grad_maxnorm.max()):.3g}")
    return out


def gather_loo(shards: Sequence[dict], control: dict | None = None) -> tuple[list[dict], dict]:
    """Join LOO shards (in order) into rows ``train_index, test_index, actual, ...`` and a summary.

    Serves both LOO kinds. A shard holds indices (m,), test_indices (T,), base_losses (T,) =
    L_test(theta_hat), test_losses (m, T) = L_test(theta_-i) and seconds; ``actual =
    L_test(theta_-i) - L_test(theta_hat)`` for every removed point and test point.

    * Certified shards (linear models, :func:`loo_shard`) also hold grad_maxnorm, steps and
      converged per point and setup_seconds: the rows carry the certificate, the summary its
      maximum.
    * ``control`` (the CNN, :func:`infcore.cnn.steps.loo_runs` with nothing removed): a shard
      of one run; rows add ``control_loss`` and ``actual_controlled = L_test(theta_-i) -
      L_test(theta_control)``, the summary the continued steps, lr and the control's drift
      ``L_test(theta_control) - L_test(theta_hat)`` per test point.
    """
    certified = bool(shards) and "grad_maxnorm" in shards[0]
    rows = []
    seconds = setup = 0.0
    for sh in shards:
        seconds += float(sh["seconds"])
        setup += float(sh.get("setup_seconds", 0.0))
        for j, t in enumerate(sh["test_indices"].tolist()):
            base = float(sh["base_losses"][j])
            for r, i in enumerate(sh["indices"].tolist()):
                loss = float(sh["test_losses"][r, j])
                row = {"train_index": i, "test_index": t, "actual": loss - base,
                       "test_loss_without": loss, "test_loss": base}
                if certified:
                    row.update(grad_maxnorm=float(sh["grad_maxnorm"][r]), steps=int(sh["steps"][r]),
                               converged=bool(sh["converged"][r]))
                if "basin_ratio" in sh:
                    row.update(basin_ratio=float(sh["basin_ratio"][r]))
                if "left_basin" in sh:
                    row.update(left_basin=bool(sh["left_basin"][r]))
                if control is not None:
                    ctl = float(control["test_losses"][0, j])
                    row.update(control_loss=ctl, actual_controlled=loss - ctl)
                rows.append(row)
    rows.sort(key=lambda r: (r["test_index"], r["train_index"]))
    idx = [int(i) for sh in shards for i in sh["indices"].tolist()]
    if idx != sorted(set(idx)):
        raise ValueError("LOO shards overlap or are out of order")
    summary = {"points": len(idx), "shards": len(shards), "seconds": seconds}
    if certified:
        summary["setup_seconds"] = setup
    summary["seconds_per_point"] = seconds / len(idx) if idx else 0.0
    if certified:
        gm = [float(g) for sh in shards for g in sh["grad_maxnorm"].tolist()]
        conv = [bool(c) for sh in shards for c in sh["converged"].tolist()]
        ok = [g for g, c in zip(gm, conv, strict=True) if c]
        summary.update(max_grad_maxnorm=max(gm) if gm else 0.0,
                       max_grad_maxnorm_certified=max(ok) if ok else None,
                       all_converged=all(conv), not_certified=sum(not c for c in conv))
    ratios = [float(v) for sh in shards for v in sh.get("basin_ratio", torch.zeros(0)).tolist()]
    if ratios:  # non-convex models: how far each optimum lies, in units of the first step
        summary.update(basin_ratio_range=[min(ratios), max(ratios)],
                       outside_basin=sum(abs(v - 1) > 1.0 for v in ratios),
                       left_basin=sum(bool(v) for sh in shards for v in sh.get("left_basin", torch.zeros(0)).tolist()))
    if control is not None:
        tests, base = control["test_indices"].tolist(), control["base_losses"]
        summary.update(steps=int(control["steps"]), lr=float(control["lr"]),
                       control_seconds=float(control["seconds"]),
                       control_drift={str(t): float(control["test_losses"][0, j] - base[j])
                                      for j, t in enumerate(tests)})
    return rows, summary
