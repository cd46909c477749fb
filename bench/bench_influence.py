"""Influence predictions for all 55,000 MNIST training points: infcore vs dattri, one run.

Task (Koh & Liang 2017, Figure 2, linear panels): ``pred_i = (1/n) g_test^T H^-1 g_i`` for
every training point i and test point 8, H the Hessian of ``mean CE + (0.01/2)||W||^2`` at
the certified optimum (see bench/common.py). Each method runs in its own subprocess, so its
peak resident memory (``ru_maxrss``) is its own; data loading is not timed (it is in the
peak memory: ``rss_before`` is the peak after loading the data).

Methods:

* ``explicit``      reference: ``obj.hessian`` (float64), ``torch.linalg.solve``.
* ``cg_none``       ``infcore.influence.inverse_hvp_cg`` (tol 1e-10 relative residual),
                    then ``predicted_loss_change`` for all points.
* ``cg_kfac``       the same with the K-FAC preconditioner.
* ``lissa``         ``infcore.influence.inverse_hvp_lissa`` with the paper's settings
                    (scale 25, depth 5000, repeats 10, batch 1, damping 0, seed 17).
* ``lissa_t1``      the same on 1 thread (LiSSA's steps are tiny products: a second thread
                    only adds synchronization, which is costly on a shared, loaded CPU).
* ``dattri_cg``     ``dattri.algorithm.IFAttributorCG`` (cache + attribute), the same
                    model, objective and test point; dattri's CG has no stopping test (its
                    ``tol`` is ignored) and always runs ``max_iter`` iterations, so it gets
                    the number of iterations ``cg_none`` needed (``--dattri-cg-iters``).
* ``dattri_lissa``  ``dattri.algorithm.IFAttributorLiSSA`` with the same LiSSA settings.

Equal problems: dattri's loss function is our objective per batch (mean CE over the batch
plus ``(0.01/2)||W||^2``), so its Hessian includes the L2 term and ``regularization`` /
``damping`` stay 0 (equivalently: plain CE with CG ``regularization=0.01``, or LiSSA
``damping = 0.01 / scale``, since dattri's LiSSA damping d multiplies the iterate by
``1 - d``, i.e. adds ``d * scale`` to H). Its score ``g_i^T H^-1 g_test`` is n times ours.

Accuracy: relative L2 error of the predictions (all points, and the top 500 by reference
|prediction|) against the explicit solve; for infcore also of the inverse-HVP vector.

    python bench/bench_influence.py --threads 2 --out bench-influence.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SCRIPT = Path(__file__).resolve()
METHODS = ("explicit", "cg_none", "cg_kfac", "lissa", "lissa_t1", "dattri_cg", "dattri_lissa")
LISSA = {"depth": 5000, "scale": 25.0, "repeats": 10, "batch_size": 1, "damping": 0.0, "seed": 17}
CG = {"tol": 1e-10, "maxiter": 1000, "damping": 0.0}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--dattri-cg-iters", default="match",
                   help="dattri CG iterations: 'match' (= cg_none's count) or an integer")
    p.add_argument("--lissa-depth", type=int, default=LISSA["depth"],
                   help="LiSSA depth (5000 = paper; lower only for smoke runs)")
    p.add_argument("--top-k", type=int, default=500, help="points in the top-|prediction| error column")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- workers
def _save(args, method, s, pred):
    import torch

    torch.save({"s": s, "pred": pred}, Path(args.work_dir) / f"influence_{method}.pt")


def worker(args) -> None:
    import torch

    method = args.worker
    common.set_threads(1 if method == "lissa_t1" else args.threads)
    prob = common.load_problem(args)
    rss_before = common.peak_rss_bytes()
    lissa = dict(LISSA, depth=args.lissa_depth)
    if method.startswith("dattri"):
        out = _dattri(args, prob, method, lissa)
    else:
        out = _infcore(prob, method, lissa)
    s, pred = out.pop("s"), out.pop("pred")
    _save(args, method, s, pred)
    out["rss_before"] = rss_before
    out["threads"] = torch.get_num_threads()
    common.write_worker_result(args, method, out)


def _infcore(prob, method: str, lissa: dict) -> dict:
    import torch
    from infcore.influence import inverse_hvp_cg, inverse_hvp_lissa, predicted_loss_change

    obj, theta = prob.obj, prob.theta
    t0 = time.perf_counter()
    g = prob.g_test()
    info: dict = {}
    if method == "explicit":
        H = obj.hessian(theta)
        t_form = time.perf_counter()
        s = torch.linalg.solve(H, g)
        info["hessian_seconds"] = t_form - t0
        info["linalg_solve_seconds"] = time.perf_counter() - t_form
        del H
    elif method in ("cg_none", "cg_kfac"):
        pre = method.split("_")[1]
        res = inverse_hvp_cg(obj, theta, g, damping=CG["damping"], tol=CG["tol"],
                             maxiter=CG["maxiter"], preconditioner=pre)
        s = res.x
        info.update(iterations=res.iterations, relative_residual=res.residual,
                    converged=res.converged)
    elif method in ("lissa", "lissa_t1"):
        res = inverse_hvp_lissa(obj, theta, g, **lissa)
        s = res.x
        info.update(lissa_settings=lissa, final_norm=res.summary()["final_norm"])
    else:
        raise SystemExit(f"unknown method {method}")
    t_solve = time.perf_counter()
    pred = predicted_loss_change(obj, theta, s)
    t_end = time.perf_counter()
    info.update(solve_seconds=t_solve - t0, predict_seconds=t_end - t_solve, seconds=t_end - t0)
    return {"s": s, "pred": pred, **info}


def _dattri(args, prob, method: str, lissa: dict) -> dict:
    """dattri on the same model, objective, optimum and test point."""
    import torch
    from dattri.algorithm.influence_function import IFAttributorCG, IFAttributorLiSSA
    from dattri.task import AttributionTask
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_default_dtype(torch.float64)  # dattri allocates its score matrix in the default dtype
    l2 = common.L2
    model = nn.Linear(prob.obj.d, 10, bias=False).double()
    ckpt = {"weight": prob.theta.view(10, prob.obj.d).clone()}

    def loss_func(params, data):
        # LiSSA's collate_fn casts the data to float32; cast back so the model stays float64
        image, label = data
        logits = torch.func.functional_call(model, params, (image.to(torch.float64),))
        reg = sum((p * p).sum() for p in params.values())
        return nn.functional.cross_entropy(logits, label.long()) + 0.5 * l2 * reg

    def target_func(params, data):
        image, label = data
        logits = torch.func.functional_call(model, params, (image.to(torch.float64),))
        return nn.functional.cross_entropy(logits, label.long())

    n = prob.n
    t0 = time.perf_counter()
    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=ckpt, target_func=target_func)
    train = TensorDataset(prob.X, prob.y)
    # one batch each: dattri's CG sums per-batch inverse HVPs over the full-train loader, and it
    # re-solves for the test point once per train batch, so one batch is both correct and fastest
    full_loader = DataLoader(train, batch_size=n, shuffle=False)
    train_loader = DataLoader(train, batch_size=n, shuffle=False)
    test_loader = DataLoader(TensorDataset(prob.x_test, prob.t_test), batch_size=1, shuffle=False)
    info: dict = {}
    if method == "dattri_cg":
        iters = int(args.dattri_cg_iters) if args.dattri_cg_iters != "match" else 100
        attributor = IFAttributorCG(task=task, device="cpu", max_iter=iters, regularization=0.0)
        info["max_iter"] = iters
    else:
        torch.manual_seed(lissa["seed"])
        attributor = IFAttributorLiSSA(task=task, device="cpu", batch_size=lissa["batch_size"],
                                       num_repeat=lissa["repeats"], recursion_depth=lissa["depth"],
                                       damping=lissa["damping"] / lissa["scale"],
                                       scaling=lissa["scale"])
        info["lissa_settings"] = lissa
    attributor.cache(full_loader)
    with torch.no_grad():
        scores = attributor.attribute(train_loader, test_loader)
    t_end = time.perf_counter()
    pred = scores[:, 0].to(torch.float64) / n
    info.update(seconds=t_end - t0, score_dtype=str(scores.dtype))
    return {"s": None, "pred": pred, **info}


# ------------------------------------------------------------------------------ parent
def rel(a, b) -> float:
    import torch

    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def main(args) -> dict:
    import torch

    common.set_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {METHODS}")
    prob = common.load_problem(args)  # fits and caches theta once, outside the workers
    print(f"n = {prob.n}, fit: {prob.fit_summary}")
    del prob
    results: dict = {}
    for m in methods:
        extra = []
        if m == "dattri_cg":
            iters = args.dattri_cg_iters
            if iters == "match":
                iters = str(results.get("cg_none", {}).get("iterations", 100))
            extra = ["--dattri-cg-iters", iters]
        if m in ("lissa", "lissa_t1", "dattri_lissa"):
            extra += ["--lissa-depth", str(args.lissa_depth)]
        results[m] = common.run_worker(SCRIPT, m, args, extra)
        r = results[m]
        if r.get("ok"):
            print(f"[{m}] {r['seconds']:.2f} s, peak RSS {common.gib(r['peak_rss_bytes'])} GiB")

    # accuracy against the explicit solve
    work = Path(args.work_dir)
    ref = torch.load(work / "influence_explicit.pt") if results.get("explicit", {}).get("ok") else None
    if ref is not None:
        top = ref["pred"].abs().argsort(descending=True)[:args.top_k]
        for m, r in results.items():
            if not r.get("ok"):
                continue
            d = torch.load(work / f"influence_{m}.pt")
            r["rel_err_pred"] = rel(d["pred"], ref["pred"])
            r["rel_err_pred_top"] = rel(d["pred"][top], ref["pred"][top])
            r["rel_err_s"] = rel(d["s"], ref["s"]) if d["s"] is not None else None
            r["sign_agreement_top"] = float((d["pred"][top].sign() == ref["pred"][top].sign()).double().mean())

    def sec(m):
        r = results.get(m, {})
        return r.get("seconds") if r.get("ok") else None

    ratios = {}
    for ours, theirs in (("cg_none", "dattri_cg"), ("cg_kfac", "dattri_cg"), ("lissa", "dattri_lissa"),
                         ("lissa_t1", "dattri_lissa"),
                         ("cg_none", "explicit"), ("cg_kfac", "explicit")):
        if sec(ours) and sec(theirs):
            ratios[f"{theirs}/{ours}"] = sec(theirs) / sec(ours)

    rows = []
    for m, r in results.items():
        if not r.get("ok"):
            rows.append([m, "FAILED"] + ["-"] * 8)
            continue
        its = r.get("iterations", r.get("max_iter", "-"))
        rows.append([m, fmt(r.get("solve_seconds"), ".2f"), fmt(r.get("predict_seconds"), ".2f"),
                     fmt(r["seconds"], ".2f"), its, fmt(r.get("rel_err_s"), ".1e"),
                     fmt(r.get("rel_err_pred"), ".1e"), fmt(r.get("rel_err_pred_top"), ".1e"),
                     common.gib(r.get("rss_before")), common.gib(r["peak_rss_bytes"])])
    print()
    print(f"Influence of all {results and prob_n(args)} training points on test point {common.TEST_INDEX} "
          f"(threads {args.threads}; one run; preliminary if the CPU is shared)")
    print(common.table(rows, ["method", "solve s", "pred s", "total s", "iters", "relerr s",
                              "relerr pred", f"relerr top{args.top_k}", "RSS0 GiB", "peak GiB"]))
    if "explicit" in results and results["explicit"].get("ok"):
        e = results["explicit"]
        print(f"explicit: Hessian {e['hessian_seconds']:.1f} s + linalg.solve {e['linalg_solve_seconds']:.1f} s")
    print("ratios (time of the first / time of the second):")
    for k, v in ratios.items():
        print(f"  {k}: {v:.1f}x")
    goals = {}
    if "dattri_cg/cg_none" in ratios or "dattri_cg/cg_kfac" in ratios:
        best = max(ratios.get("dattri_cg/cg_none", 0), ratios.get("dattri_cg/cg_kfac", 0))
        peak = max(results[m]["peak_rss_bytes"] for m in ("cg_none", "cg_kfac") if results.get(m, {}).get("ok"))
        goals["cg_5x_faster_than_dattri"] = best >= 5
        goals["cg_peak_below_2GB"] = peak < 2e9
    if "dattri_lissa/lissa" in ratios:
        goals["lissa_3x_faster_than_dattri"] = ratios["dattri_lissa/lissa"] >= 3
    if "dattri_lissa/lissa_t1" in ratios:
        goals["lissa_t1_3x_faster_than_dattri"] = ratios["dattri_lissa/lissa_t1"] >= 3
    for m in ("lissa", "lissa_t1"):
        if sec(m):
            goals[f"{m}_below_80s"] = sec(m) < 80
    print("goals:", goals)
    return {"benchmark": "influence", "n_train": prob_n(args), "test_index": common.TEST_INDEX,
            "cg": CG, "lissa": dict(LISSA, depth=args.lissa_depth), "results": results,
            "ratios": ratios, "goals": goals, "environment": common.environment()}


def fmt(v, f: str) -> str:
    return "-" if v is None else format(v, f)


def prob_n(args) -> int:
    return 55000 if args.max_train is None else min(args.max_train, 55000)


if __name__ == "__main__":
    a = parse()
    if a.worker:
        worker(a)
    else:
        common.dump_json(a.out, main(a))
