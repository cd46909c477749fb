"""Figure 2's third panel (the CNN at a certified minimum): every stage's seconds, and the
ratios that set how the stages are computed, measured in one run.

The experiment is ``mnist_cnn_certified`` of ``config/config.yaml`` (schema defaults filled
as the workflow fills them), run in process through the same ``infcore.steps`` functions the
rules call, in the rules' order: data, train (Adam start + certified fit), loo_factor (the
exact Hessian's chord factor), influence_cg, influence_gn (Gauss-Newton), influence_lissa,
LOO of the top k. Then, at the fitted theta:

* **curvature**: the Gauss-Newton build against the exact Hessian by HVP columns, in vmap
  blocks (what ``loo_factor`` uses) and one column at a time (``--hvp-columns`` columns timed,
  scaled to all ``dim``: said so in the output);
* **LOO gradients**: the mean data gradient at a stack of ``--stack`` parameter vectors (what
  a batched LOO step needs), one vector at a time (``data_grads``, what the LOO loop does),
  against one pass of ``stacked_logits`` over the stack, looped and grouped convolutions;
* **float32**: the same gradient pass in float32 (the linear LOO's steering passes).

The gradient passes are the fastest of three calls after a warm-up; the stages run once.

    python bench/bench_cnn_certified.py --threads 1 --out results/bench/bench-cnn-certified.json

``--max-train`` / ``--top-k`` / ``--width`` shrink the experiment for a quick look (the
defaults are the config's). MNIST: ``--data-root`` (default ``resources/mnist``, as the
workflow) must hold ``MNIST/raw/`` with the four ``.gz`` files.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, dump_json, environment, set_threads, table  # noqa: E402
from infcore.cnn.model import stacked_logits  # noqa: E402
from infcore.data import make_dataset  # noqa: E402
from infcore.selection import top_k  # noqa: E402
from infcore.steps import (  # noqa: E402
    influence_cg,
    influence_gn,
    influence_lissa,
    initial_point,
    loo_factor,
    loo_shard,
    make_objective,
    train,
)

EXPERIMENT = "mnist_cnn_certified"


def experiment_settings(config_path: Path, name: str) -> dict:
    """The experiment's settings with the schema's defaults, as the workflow validates them."""
    from infcore.config import normalize
    from snakemake.utils import validate

    with open(config_path) as f:
        cfg = yaml.safe_load(f)
    validate(cfg, str(REPO / "config" / "schema.yaml"))
    if name not in cfg["experiments"]:
        raise SystemExit(f"{config_path}: no experiment {name!r}")
    return normalize(cfg["experiments"][name])


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def best_of(repeats: int, fn, *args):
    """Output and the fastest of ``repeats`` timed calls, after one untimed warm-up call."""
    fn(*args)
    runs = [timed(fn, *args) for _ in range(repeats)]
    return runs[0][0], min(s for _, s in runs)


def stacked_grads(obj, thetas: torch.Tensor, impl: str) -> torch.Tensor:
    """Mean data gradients at every row of ``thetas`` from one pass of the stacked network."""
    T = thetas.detach().clone().requires_grad_(True)
    images = obj.images(obj.X)
    z = stacked_logits(T, images, *obj.dims, impl=impl)
    ce = torch.nn.functional.cross_entropy(z.reshape(-1, obj.n_classes), obj.y.repeat(T.shape[0]),
                                           reduction="sum")
    (g,) = torch.autograd.grad(ce, T)
    return g / obj.n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    p.add_argument("--experiment", default=EXPERIMENT)
    p.add_argument("--data-root", default=str(REPO / "resources" / "mnist"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's CNN rules use 1)")
    p.add_argument("--max-train", type=int, default=None, help="override dataset.max_train")
    p.add_argument("--top-k", type=int, default=None, help="override top_k (LOO points)")
    p.add_argument("--width", type=int, default=None, help="override cnn.width")
    p.add_argument("--stack", type=int, default=8, help="parameter vectors in the stacked-gradient comparison")
    p.add_argument("--hvp-columns", type=int, default=8, help="HVP columns timed one at a time")
    p.add_argument("--out", default=None, help="write the results as JSON to this path")
    args = p.parse_args()
    set_threads(args.threads)
    exp = copy.deepcopy(experiment_settings(Path(args.config), args.experiment))
    if args.max_train is not None:
        exp["dataset"]["max_train"] = args.max_train
    if args.top_k is not None:
        exp["top_k"] = args.top_k
    if args.width is not None:
        exp["cnn"]["width"] = args.width
    quiet = lambda m: None  # noqa: E731
    stages = {}
    t = int(exp["test_indices"][0])

    ds, stages["data"] = timed(make_dataset, exp["dataset"], mnist_root=args.data_root)
    obj = make_objective(ds, exp)
    print(f"{args.experiment}: n {obj.n}, dim {obj.dim}, width {obj.width}, test point {t}, top {exp['top_k']}, "
          f"{args.threads} thread(s)", flush=True)
    theta0, stages["train: Adam start"] = timed(initial_point, obj, exp, log=quiet)
    (theta, fit_rec), stages["train: certified fit"] = timed(train, obj, ds, exp["fit"], log=quiet, theta0=theta0)
    print(f"fit: max|grad| {fit_rec['grad_maxnorm']:.2g}, Hessian eigenvalues [{fit_rec['hessian_min_eigenvalue']:.3g}, "
          f"{fit_rec['hessian_max_eigenvalue']:.4g}], {fit_rec['lbfgs_iterations']} L-BFGS + {fit_rec['newton_steps']} "
          "Newton", flush=True)
    (factor, _), stages["loo_factor (exact Hessian + Cholesky)"] = timed(loo_factor, obj, theta, log=quiet)
    (pred, cg_diag), stages["influence_cg"] = timed(influence_cg, obj, theta, ds, t, exp["cg"], log=quiet,
                                                    factor=factor)
    idx = top_k(pred, exp["top_k"])
    (_, gn_diag), stages["influence_gn (Gauss-Newton)"] = timed(influence_gn, obj, theta, ds, t, idx, pred,
                                                               exp["cg"]["damping"], log=quiet)
    (_, lissa_diag), stages["influence_lissa"] = timed(influence_lissa, obj, theta, ds, t, idx, exp["lissa"],
                                                       log=quiet)
    loo_out, stages["loo (all top-k points)"] = timed(loo_shard, obj, theta, ds, idx, [t], exp["loo"], log=quiet,
                                                      factor=factor)
    certified = int(loo_out["converged"].sum())
    print(f"LOO: {certified} of {idx.numel()} certified", flush=True)

    # curvature: Gauss-Newton build vs exact Hessian (vmap blocks; one HVP column at a time)
    _, gn_s = timed(obj.gauss_newton, theta)
    _, exact_s = timed(obj.data_hessian, theta)
    eye = torch.eye(obj.dim, dtype=theta.dtype)
    cols = min(args.hvp_columns, obj.dim)
    _, col_s = timed(lambda: [obj.hvp(theta, eye[:, j]) for j in range(cols)])
    hvp_all_s = col_s / cols * obj.dim

    # gradients at a stack of parameter vectors: one at a time vs stacked passes
    gen = torch.Generator().manual_seed(0)
    m = args.stack
    thetas = theta[None, :] + 1e-3 * torch.randn(m, obj.dim, generator=gen, dtype=theta.dtype)
    ref, one_s = best_of(3, obj.data_grads, thetas)
    out_loop, loop_s = best_of(3, stacked_grads, obj, thetas, "loop")
    out_grp, grp_s = best_of(3, stacked_grads, obj, thetas, "grouped")
    for name, out in (("loop", out_loop), ("grouped", out_grp)):
        err = float((out - ref).abs().max() / ref.abs().max())
        if err > 1e-10:
            raise SystemExit(f"stacked gradients ({name}) differ from one at a time: {err:.3g}")
    _, f32_s = best_of(3, obj.steering_data_grads, thetas, theta, None)

    rows = [[k, f"{v:.2f}"] for k, v in stages.items()]
    total = sum(stages.values())
    rows.append(["total", f"{total:.1f}"])
    print("\nStage seconds (the workflow's steps, in process):")
    print(table(rows, ["stage", "seconds"]))
    ratios = {
        "exact Hessian, HVP columns one at a time / vmap blocks": hvp_all_s / exact_s,
        "exact Hessian (vmap blocks) / Gauss-Newton build": exact_s / gn_s,
        f"{m} gradients one at a time / one stacked pass (loop)": one_s / loop_s,
        f"{m} gradients one at a time / one stacked pass (grouped)": one_s / grp_s,
        f"{m} gradients float64 / float32": one_s / f32_s,
    }
    print("\nCurvature and LOO gradient passes:")
    print(table([["Gauss-Newton build", f"{gn_s:.2f}"], ["exact Hessian, vmap blocks", f"{exact_s:.2f}"],
                 [f"exact Hessian, one HVP column at a time ({cols} timed, x {obj.dim / cols:.0f})",
                  f"{hvp_all_s:.1f}"],
                 [f"{m} gradients, one at a time (float64)", f"{one_s:.3f}"],
                 [f"{m} gradients, stacked loop pass", f"{loop_s:.3f}"],
                 [f"{m} gradients, stacked grouped pass", f"{grp_s:.3f}"],
                 [f"{m} gradients, one at a time (float32)", f"{f32_s:.3f}"]], ["what", "seconds"]))
    print("\nRatios (this run):")
    print(table([[k, f"{v:.2f}x"] for k, v in ratios.items()], ["ratio", "value"]))
    dump_json(args.out, {
        "experiment": args.experiment, "settings": exp, "environment": environment(), "threads": args.threads,
        "n": obj.n, "dim": obj.dim, "stages": stages, "total_seconds": total,
        "fit": {k: fit_rec[k] for k in ("grad_maxnorm", "hessian_min_eigenvalue", "hessian_max_eigenvalue",
                                        "lbfgs_iterations", "newton_steps")},
        "cg_iterations": cg_diag["iterations"], "gauss_newton_vs_cg": gn_diag["vs_cg_selected"],
        "lissa_converged": lissa_diag["convergence"]["status"],
        "loo_certified": certified, "loo_points": int(idx.numel()),
        "curvature_seconds": {"gauss_newton": gn_s, "exact_vmap_blocks": exact_s,
                              "exact_hvp_columns_scaled": hvp_all_s, "hvp_columns_timed": cols},
        "gradient_seconds": {"stack": m, "one_at_a_time": one_s, "stacked_loop": loop_s,
                             "stacked_grouped": grp_s, "float32_one_at_a_time": f32_s},
        "ratios": ratios,
    })


if __name__ == "__main__":
    main()
