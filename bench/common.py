"""Shared pieces of the benchmarks: the paper's MNIST problem, its fitted optimum, workers.

The problem is Koh & Liang (2017), Figure 2 (linear panels): MNIST training images after the
first 5,000 (n = 55,000), pixels / 255 flattened to 784 values in float64, multinomial
logistic regression 784 -> 10 without bias, objective ``mean CE + (0.01 / 2) ||W||^2``
(``infcore.objective.LogisticObjective``), fitted with ``infcore.fit.fit`` to
``max |grad| <= 1e-10``; test point 8 of the t10k set.

The fitted optimum is cached under ``--work-dir`` (``results/bench`` by default, git-ignored):
fitting is not what the benchmarks measure. Every measured method runs in its own
subprocess (``run_worker``) so that its peak resident memory (``ru_maxrss``) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

L2 = 0.01
VALIDATION_SIZE = 5000
TEST_INDEX = 8
FIT_TOL = 1e-10
MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=str(REPO / "resources" / "mnist"),
                   help="torchvision MNIST root (holds MNIST/raw/); default: resources/mnist, where the workflow downloads it")
    p.add_argument("--work-dir", default=str(REPO / "results" / "bench"),
                   help="cache of the fitted optimum and the workers' outputs (git-ignored)")
    p.add_argument("--threads", type=int, default=2, help="torch / BLAS threads")
    p.add_argument("--max-train", type=int, default=None,
                   help="keep only the first N training points (quick smoke runs; default: all 55,000)")
    p.add_argument("--out", default=None, help="write the results as JSON to this path")


def set_threads(threads: int) -> None:
    """Thread count for torch and for the BLAS that numpy / scikit-learn use."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def mnist_hint(root: str | Path) -> str:
    return (f"MNIST not found under {root}/MNIST/raw/ (needs {', '.join(MNIST_RAW)} or their .gz). "
            "Pass --data-root DIR with DIR/MNIST/raw/ holding them (a writable folder: the "
            ".gz files are unpacked there; on the shared machine copy "
            "../shared/data/MNIST/raw/*.gz into DIR/MNIST/raw/), or let torchvision "
            "download them into resources/ (needs internet).")


def load_mnist(root: str | Path, max_train: int | None = None):
    """(X_train, y_train, X_test, y_test) as in the paper: float64, pixels / 255, 784 columns,
    training images after the first 5,000 (``infcore.data.load_mnist``, which unpacks the
    ``.gz`` files in ``root/MNIST/raw/`` and downloads only what is missing)."""
    from infcore.data import load_mnist as infcore_load_mnist

    try:
        ds = infcore_load_mnist(root, validation_size=VALIDATION_SIZE, max_train=max_train)
    except (RuntimeError, OSError) as exc:
        raise SystemExit(f"{mnist_hint(root)}\n({type(exc).__name__}: {exc})") from exc
    return ds.X_train.contiguous(), ds.y_train, ds.X_test.contiguous(), ds.y_test


class Problem:
    """The data, the objective, the fitted optimum and the test point."""

    def __init__(self, X, y, X_test, y_test, theta, fit_summary: dict):
        from infcore.objective import LogisticObjective

        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self.obj = LogisticObjective(X, y, 10, L2)
        self.theta = theta
        self.fit_summary = fit_summary
        self.x_test = X_test[TEST_INDEX:TEST_INDEX + 1]
        self.t_test = y_test[TEST_INDEX:TEST_INDEX + 1]

    @property
    def n(self) -> int:
        return self.obj.n

    def g_test(self):
        from infcore.influence import test_gradient

        return test_gradient(self.obj, self.theta, self.x_test, self.t_test)

    def test_loss(self, thetas):
        """Unregularized loss of the test point at theta (dim,) or thetas (m, dim)."""
        return self.obj.data_loss(thetas, self.x_test, self.t_test)


def load_problem(args, log=print) -> Problem:
    """Load MNIST and the fitted optimum (fitting and caching it on first use)."""
    import torch
    from infcore.fit import fit

    X, y, X_test, y_test = load_mnist(args.data_root, args.max_train)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"theta_n{X.shape[0]}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=False)
        theta, summary = saved["theta"], saved["fit"]
    else:
        from infcore.objective import LogisticObjective

        log(f"fitting the full model on n = {X.shape[0]} (cached at {cache}) ...")
        res = fit(LogisticObjective(X, y, 10, L2), tol=FIT_TOL, log=log)
        if not res.converged:
            raise SystemExit(f"fit did not reach max|grad| <= {FIT_TOL:g}: {res.summary()}")
        theta, summary = res.theta, res.summary()
        torch.save({"theta": theta, "fit": summary}, cache)
    return Problem(X, y, X_test, y_test, theta, summary)


# -------------------------------------------------------------------------------- workers
def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def run_worker(script: Path, method: str, args, extra: list[str] | None = None,
               log=print) -> dict:
    """Run ``script --worker METHOD`` in a fresh interpreter and return its JSON result.

    The worker writes its result JSON to ``work_dir/worker_METHOD.json`` with its own peak
    RSS; the parent also records ``RUSAGE_CHILDREN`` before and after (a max over all
    children so far, printed for cross-checking).
    """
    out = Path(args.work_dir) / f"worker_{method}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), "--worker", method, "--data-root", args.data_root,
           "--work-dir", args.work_dir, "--threads", str(args.threads)]
    if args.max_train is not None:
        cmd += ["--max-train", str(args.max_train)]
    cmd += extra or []
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    log(f"[{method}] {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env)
    wall = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode != 0 or not out.exists():
        log(f"[{method}] FAILED with exit code {proc.returncode}")
        return {"method": method, "ok": False, "returncode": proc.returncode, "wall_seconds": wall}
    res = json.loads(out.read_text())
    res.update(ok=True, wall_seconds=wall, rusage_children_max_bytes=children)
    return res


def write_worker_result(args, method: str, result: dict) -> None:
    result = {"method": method, "peak_rss_bytes": peak_rss_bytes(), **result}
    (Path(args.work_dir) / f"worker_{method}.json").write_text(json.dumps(result, indent=1))


def environment() -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads()}
    for mod in ("sklearn", "dattri", "numpy", "scipy"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except ImportError:
            info[mod] = None
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def table(rows: list[list], header: list[str]) -> str:
    """Plain-text table, right-aligned columns."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * x for x in w)
    out = ["  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(header)), line]
    for r in cells[1:]:
        out.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def dump_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1, default=float))
        print(f"wrote {path}")
