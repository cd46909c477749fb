"""Seconds per CNN training step, per batched-LOO step and per CG HVP; projected totals.

Measures, on this machine and device, the pieces of the Figure 2 CNN protocol
(``infcore.cnn``) and multiplies them out for the paper's protocol and for reduced ones:

* training step: one Adam step on a minibatch of 500 (one model);
* batched-LOO step: one step of ``retrain`` for m removed points at once (m stacked models
  sharing the minibatch), for each m in ``--points``; reported per step and per model-step;
* CG HVP: one full-data Hessian-vector product (float64, minibatches of 100, double
  backward), i.e. one CG iteration; plus the one JVP pass that gives all ``g_i . s``.

Projection: ``train_steps * t_train + ceil(points / m) * loo_steps * t_loo(m)
+ loo_steps * t_train (control) + cg_iters * t_hvp + t_jvp`` with m the largest measured
batch not above ``points`` (for fewer points than the smallest m: ``points * loo_steps *
t_loo(m) / m``).

Usage::

    python bench/cnn_steps.py                      # CPU, real MNIST if present
    python bench/cnn_steps.py --device cuda --points 10 50 100 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "workflow", "scripts"))

from infcore import cnn  # noqa: E402
from infcore.data import load_small_mnist  # noqa: E402


def _time(fn, reps: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    out = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def project(t: dict, train_steps: int, points: int, loo_steps: int, cg_iters: int) -> dict:
    """Projected seconds of one protocol from the measured times ``t``."""
    ms = sorted(int(m) for m in t["loo_step"])
    m = max([k for k in ms if k <= points] or [ms[0]])
    if points < m:  # fewer points than the smallest measured batch: per model-step rate
        loo = points * loo_steps * t["loo_step"][str(m)] / m
    else:
        loo = math.ceil(points / m) * loo_steps * t["loo_step"][str(m)]
    parts = {
        "train": train_steps * t["train_step"],
        "influence": cg_iters * t["hvp"] + t["jvp_all"],
        "loo": loo,
        "control": loo_steps * t["train_step"],
    }
    parts["total"] = sum(parts.values())
    parts["loo_batch"] = m
    return parts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--points", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--impl", default="auto", help="stacked forward: auto, loop, grouped")
    ap.add_argument("--mnist-root", default="resources/mnist",
                    help="torchvision MNIST root (writable; the workflow downloads MNIST there)")
    ap.add_argument("--cg-iters", type=int, default=100,
                    help="CG iterations assumed in projections (fmin_ncg's maxiter=100)")
    ap.add_argument("--smoke", type=int, nargs=4, default=[1000, 5, 200, 20],
                    metavar=("TRAIN", "POINTS", "LOO", "CG"), help="reduced configuration")
    ap.add_argument("--mid", type=int, nargs=4, default=[1500, 10, 200, 40],
                    metavar=("TRAIN", "POINTS", "LOO", "CG"), help="mid-size configuration")
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = a.device
    if os.path.exists(os.path.join(a.mnist_root, "MNIST", "raw")):
        d = load_small_mnist(a.mnist_root)
        x, y, data = d.x_train, d.y_train, "MNIST 10% subset"
    else:
        g = torch.Generator().manual_seed(0)
        x, y, data = torch.rand(5500, 1, 28, 28, generator=g), torch.randint(0, 10, (5500,)), \
            "random 5500 x 28 x 28"
    x, y = x.to(dev), y.to(dev)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    theta = cnn.init_params(0, device=dev)

    t = {"loo_step": {}}
    t["train_step"] = _time(lambda: cnn.train(x, y, 5, theta0=theta, log_every=0, impl=a.impl),
                            a.reps, dev) / 5
    tr = cnn.train(x, y, 5, theta0=theta, log_every=0)
    for m in a.points:
        steps = 2
        rem = list(range(m))
        t["loo_step"][str(m)] = _time(
            lambda rem=rem, steps=steps: cnn.retrain(tr.theta, tr.adam, x, y, rem, steps, 1e-6,
                                                     impl=a.impl),
            max(1, a.reps - 1), dev) / steps
    th64, x64 = tr.theta.double(), x.double()
    mv = cnn.make_hvp(th64, x64, y, batch_size=100)
    v = torch.randn_like(th64)
    t["hvp"] = _time(lambda: mv(v), a.reps, dev)
    t["jvp_all"] = _time(lambda: cnn.train_point_dots(th64, v, x64, y), 1, dev)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    p = cnn.PAPER
    configs = {
        "paper": (p["train_steps"], p["num_points"], p["loo_steps"], a.cg_iters),
        "mid": tuple(a.mid),
        "smoke": tuple(a.smoke),
    }
    proj = {k: project(t, *c) for k, c in configs.items()}
    res = {"device": dev, "threads": torch.get_num_threads(), "impl": a.impl, "data": data,
           "loadavg_start_end": [load0, load1], "seconds": t,
           "configs": {k: dict(zip(["train_steps", "points", "loo_steps", "cg_iters"], c,
                                   strict=True)) for k, c in configs.items()},
           "projected_seconds": proj}

    print(f"device {dev}, {torch.get_num_threads()} threads, impl {a.impl}, data: {data}; "
          f"load average {load0:.1f} -> {load1:.1f}")
    print(f"training step (batch 500)        {t['train_step']:.4f} s")
    for m, s in t["loo_step"].items():
        print(f"batched LOO step, m = {m:>4}       {s:.4f} s  ({s / int(m):.4f} s per model-step)")
    print(f"CG HVP (n = {x.shape[0]}, float64, batch 100) {t['hvp']:.3f} s")
    print(f"all g_i . s (one JVP pass)       {t['jvp_all']:.3f} s")
    for k, c in configs.items():
        q = proj[k]
        print(f"{k:>6}: train {c[0]} steps, {c[1]} points x {c[2]} LOO steps, CG {c[3]} it: "
              f"train {q['train'] / 3600:.2f} h + influence {q['influence'] / 60:.1f} min + "
              f"LOO {q['loo'] / 3600:.2f} h (m = {q['loo_batch']}) + control "
              f"{q['control'] / 60:.1f} min = {q['total'] / 3600:.2f} h "
              f"({q['total'] / 60:.1f} min)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
