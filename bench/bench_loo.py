"""Seconds per certified leave-one-out point: infcore vs scikit-learn vs the arithmetic floor.

Task: the top-k training points by |predicted loss change| (CG influence, test point 8; the
paper's Figure 2 retrains the top 500) are each removed and the model is refit. In one run:

* ``infcore``  ``infcore.loo.loo_retrain`` on all k points, certified ``max |grad| <= 1e-10``
  of the LOO objective by a float64 pass; seconds per point with its one-time setup
  (float32-accumulated Hessian + Cholesky) amortized over the k points, and without it;
  passes over the data per point in float64 and in float32 (steering passes).
* ``sklearn``  the original protocol on the first ``--k-sklearn`` of the same points:
  ``LogisticRegression(solver='lbfgs', tol=1e-8, warm_start=True, fit_intercept=False,
  C=1/(m * 0.01))`` refit per removed point (multinomial: the only mode of lbfgs for
  > 2 classes in scikit-learn >= 1.5, where ``multi_class`` is deprecated / removed),
  warm-started from the full optimum (``coef_`` set to it). ``m = n - 1`` training points,
  so that ``C`` gives exactly our LOO objective ``mean CE over n-1 + (0.01/2)||W||^2``.
  The time per point includes building the (n-1)-row array. Its solutions are checked
  against ours: the test-loss change, and our LOO gradient max-norm at its solution.
* ``floor``    one full-batch float64 gradient per point: the mean data gradient at m thetas
  at once, as one (n, d) x (d, m k) product, a softmax and one (m k, n) x (n, d) product
  (the LOO solver's chunk size m), divided by m. A solver that needs one gradient
  evaluation per point could not beat it.

    python bench/bench_loo.py --threads 2 --k 500 --k-sklearn 5 --out results/bench/bench-loo.json

(MNIST from ``--data-root``, default ``resources/mnist``, where the workflow downloads it.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--k", type=int, default=500, help="top-|prediction| points retrained by infcore")
    p.add_argument("--k-sklearn", type=int, default=5, help="of those, how many sklearn refits")
    p.add_argument("--tol", type=float, default=1e-10, help="infcore LOO certificate")
    p.add_argument("--sklearn-tol", type=float, default=1e-8, help="sklearn lbfgs tol (original protocol)")
    p.add_argument("--sklearn-max-iter", type=int, default=10000)
    p.add_argument("--floor-repeats", type=int, default=5)
    return p.parse_args(argv)


def top_points(prob, k: int):
    """Top-k training points by |CG prediction| (K-FAC preconditioned, tol 1e-10)."""
    from infcore.influence import inverse_hvp_cg, predicted_loss_change

    g = prob.g_test()
    res = inverse_hvp_cg(prob.obj, prob.theta, g, tol=1e-10, maxiter=1000, preconditioner="kfac")
    res.raise_if_not_converged()
    pred = predicted_loss_change(prob.obj, prob.theta, res.x)
    return pred.abs().argsort(descending=True)[:k], pred


def loo_gradient(prob, theta, i: int):
    """Gradient of the LOO objective without point i at theta (for certifying sklearn)."""
    obj, n = prob.obj, prob.n
    D = obj.data_grad(theta, obj.X, obj.y)
    d_i = obj.data_grad(theta, obj.X[i:i + 1], obj.y[i:i + 1])
    return (n * D - d_i) / (n - 1) + obj.l2 * theta


def floor_seconds(prob, m: int, repeats: int) -> float:
    """Seconds for the mean data gradient at m thetas at once (best of ``repeats``)."""
    import torch

    obj = prob.obj
    k, d, n = obj.n_classes, obj.d, obj.n
    gen = torch.Generator().manual_seed(0)
    thetas = prob.theta[None, :] + 1e-3 * torch.randn(m, obj.dim, generator=gen, dtype=prob.theta.dtype)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        logits = (obj.X @ thetas.reshape(m * k, d).T).view(n, m, k)
        P = torch.softmax(logits, dim=2)
        P -= obj._Y[:, None, :]
        G = (P.view(n, m * k).T @ obj.X).reshape(m, k * d) / n
        times.append(time.perf_counter() - t0)
        del G
    return min(times[1:])


def run_sklearn(prob, idx, theta_hat, args) -> list[dict]:
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Xn, yn = prob.X.numpy(), prob.y.numpy()
    n = prob.n
    W_hat = theta_hat.view(10, -1).numpy()
    out = []
    for i in idx.tolist():
        t0 = time.perf_counter()
        keep = np.ones(n, dtype=bool)
        keep[i] = False
        X_i, y_i = Xn[keep], yn[keep]
        t_copy = time.perf_counter() - t0
        clf = LogisticRegression(solver="lbfgs", tol=args.sklearn_tol, warm_start=True,
                                 C=1.0 / ((n - 1) * common.L2), fit_intercept=False,
                                 max_iter=args.sklearn_max_iter)
        clf.coef_ = W_hat.copy()
        clf.intercept_ = np.zeros(10)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(X_i, y_i)
        sec = time.perf_counter() - t0
        out.append({"index": i, "seconds": sec, "copy_seconds": t_copy,
                    "n_iter": int(np.max(clf.n_iter_)),
                    "converged_warning": any(issubclass(w.category, ConvergenceWarning) for w in caught),
                    "coef": clf.coef_.copy()})
        print(f"  sklearn point {i}: {sec:.1f} s, {out[-1]['n_iter']} lbfgs iterations", flush=True)
    return out


def main(args) -> dict:
    import torch
    from infcore.loo import loo_retrain

    common.set_threads(args.threads)
    prob = common.load_problem(args)
    n, obj, theta = prob.n, prob.obj, prob.theta
    print(f"n = {n}, fit: {prob.fit_summary}")
    k = min(args.k, n)
    idx, pred = top_points(prob, k)
    base_loss = float(prob.test_loss(theta))

    # ---- infcore
    print(f"infcore loo_retrain on {k} points ...", flush=True)
    t0 = time.perf_counter()
    res = loo_retrain(obj, theta, idx, tol=args.tol, max_steps=30)
    wall = time.perf_counter() - t0
    setup = res.setup_seconds
    chunk = max(1, min(256, (512 * 2**20) // (3 * 8 * n * obj.n_classes)))  # LooSolver.run default
    chunk = min(chunk, k)
    ours_delta = prob.test_loss(res.thetas) - base_loss
    steps = res.steps.double()
    ours = {"points": k, "wall_seconds": wall, "setup_seconds": setup,
            "per_point_with_setup": wall / k, "per_point_without_setup": (wall - setup) / k,
            "mean_steps": float(steps.mean()), "max_steps": int(steps.max()),
            "median_steps": float(steps.median()), "all_converged": bool(res.converged.all()),
            "max_grad_maxnorm": float(res.grad_maxnorm.max()), "chunk": chunk,
            "mean_passes64": float(res.passes64.double().mean()),
            "mean_passes32": float(res.passes32.double().mean())}
    print(f"  {wall:.1f} s ({setup:.1f} s setup), {ours['mean_steps']:.2f} steps/point, "
          f"passes over the data per point: {ours['mean_passes64']:.2f} float64 + "
          f"{ours['mean_passes32']:.2f} float32, max certificate {ours['max_grad_maxnorm']:.2e}", flush=True)

    # ---- floor
    floor_m = floor_seconds(prob, chunk, args.floor_repeats)
    floor_1 = floor_seconds(prob, 1, args.floor_repeats)
    floor = {"m": chunk, "seconds_batch": floor_m, "per_point": floor_m / chunk, "per_point_m1": floor_1}
    print(f"floor: {floor_m:.2f} s for {chunk} thetas = {floor['per_point']:.3f} s/point "
          f"(m = 1: {floor_1:.3f} s)", flush=True)

    # ---- sklearn on the first k_sklearn points
    ks = min(args.k_sklearn, k)
    print(f"sklearn refits on {ks} points ...", flush=True)
    sk = run_sklearn(prob, idx[:ks], theta, args)
    sk_delta, sk_cert = [], []
    for j, r in enumerate(sk):
        th = torch.from_numpy(r.pop("coef")).reshape(-1).to(theta.dtype)
        sk_delta.append(float(prob.test_loss(th)) - base_loss)
        sk_cert.append(float(loo_gradient(prob, th, r["index"]).abs().max()))
        r.update(test_loss_change=sk_delta[-1], ours_test_loss_change=float(ours_delta[j]),
                 our_certificate_at_sklearn=sk_cert[-1])
    diffs = [abs(a - float(b)) for a, b in zip(sk_delta, ours_delta[:ks], strict=True)]
    sk_sec = [r["seconds"] for r in sk]
    sklearn = {"points": ks, "per_point": statistics.mean(sk_sec) if sk_sec else None,
               "per_point_median": statistics.median(sk_sec) if sk_sec else None,
               "mean_lbfgs_iterations": statistics.mean(r["n_iter"] for r in sk) if sk else None,
               "max_abs_diff_test_loss_change": max(diffs) if diffs else None,
               "max_abs_test_loss_change": float(ours_delta[:ks].abs().max()) if ks else None,
               "max_our_certificate_at_sklearn": max(sk_cert) if sk_cert else None,
               "refits": sk}
    ratios = {}
    if sklearn["per_point"]:
        ratios["sklearn/ours_with_setup"] = sklearn["per_point"] / ours["per_point_with_setup"]
        ratios["sklearn/ours_without_setup"] = sklearn["per_point"] / ours["per_point_without_setup"]
    ratios["ours_with_setup/floor"] = ours["per_point_with_setup"] / floor["per_point"]
    ratios["ours_without_setup/floor"] = ours["per_point_without_setup"] / floor["per_point"]
    goals = {"20x_faster_than_sklearn": ratios.get("sklearn/ours_with_setup", 0) >= 20,
             "within_3x_of_floor_with_setup": ratios["ours_with_setup/floor"] <= 3,
             "within_3x_of_floor_without_setup": ratios["ours_without_setup/floor"] <= 3}

    passes = f"{ours['mean_passes64']:.2f}+{ours['mean_passes32']:.2f}(f32)"
    rows = [["infcore (with setup)", k, f"{ours['per_point_with_setup']:.3f}", passes,
             f"{ours['max_grad_maxnorm']:.1e}"],
            ["infcore (without setup)", k, f"{ours['per_point_without_setup']:.3f}", "", ""],
            [f"floor (1 gradient, m={chunk})", chunk, f"{floor['per_point']:.3f}", "1", ""],
            ["floor (1 gradient, m=1)", 1, f"{floor_1:.3f}", "1", ""]]
    if sk:
        rows.append(["sklearn lbfgs warm start", ks, f"{sklearn['per_point']:.3f}",
                     f"{sklearn['mean_lbfgs_iterations']:.1f} its", f"{sklearn['max_our_certificate_at_sklearn']:.1e}"])
    print()
    print(f"Seconds per certified LOO point, n = {n}, top {k} of test point {common.TEST_INDEX} "
          f"(threads {args.threads}; one run; preliminary if the CPU is shared)")
    print(common.table(rows, ["method", "points", "s/point", "passes/point", "max|grad|"]))
    print(f"infcore setup (Hessian + Cholesky) {setup:.1f} s; loop {wall - setup:.1f} s; "
          f"steps/point mean {ours['mean_steps']:.2f}, median {ours['median_steps']:.0f}, max {ours['max_steps']}")
    if sk:
        print(f"sklearn vs infcore test-loss change on {ks} points: max |diff| "
              f"{sklearn['max_abs_diff_test_loss_change']:.2e} (max |change| {sklearn['max_abs_test_loss_change']:.2e})")
    print("ratios:")
    for key, v in ratios.items():
        print(f"  {key}: {v:.1f}x")
    print("goals:", goals)
    return {"benchmark": "loo", "n_train": n, "test_index": common.TEST_INDEX, "k": k,
            "ours": ours, "floor": floor, "sklearn": sklearn, "ratios": ratios, "goals": goals,
            "top_indices": idx.tolist(), "environment": common.environment()}


if __name__ == "__main__":
    a = parse()
    common.dump_json(a.out, main(a))
