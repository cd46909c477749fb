"""Put one-line bugs into a copy of the repository and show which fast tests catch each.

Every bug is a text patch (one exact string, which must occur exactly once, replaced by
another) applied to a temporary copy of the working tree (tracked and untracked, not ignored
files; never the working tree itself). For each bug the fast tests that should catch it are
run in that copy, and a table bug -> failing tests is printed (markdown, the table in
docs/testing.md). The unchanged copy is run first and must pass. Exit status 1 if the
baseline fails or any bug is caught by no test.

    python bench/inject_bugs.py                     # every bug, the default test files
    python bench/inject_bugs.py --bugs sign,cg-damping --tests tests/test_contract.py
    python bench/inject_bugs.py --list
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIB = "workflow/scripts/infcore"
DEFAULT_TESTS = ["tests/test_contract.py", "tests/test_solvers.py", "tests/test_objective.py",
                 "tests/test_objective_interface.py", "tests/test_influence_loo.py",
                 "tests/test_steps.py", "tests/test_readme.py"]


@dataclass(frozen=True)
class Bug:
    name: str
    bug_class: str
    path: str
    old: str
    new: str
    what: str


BUGS = [
    Bug("g_i-l2-dot", "term dropped from g_i", f"{LIB}/logistic.py",
        "val = torch.cat(out) + self.l2 * (theta @ S2)[None, :]", "val = torch.cat(out)",
        "per_example_dot without the L2 share l2 theta . s"),
    Bug("g_i-l2-grads", "term dropped from g_i", f"{LIB}/logistic.py",
        "        return G + self.l2 * theta\n", "        return G\n",
        "per_example_grads without the L2 share"),
    Bug("sign", "sign flipped", f"{LIB}/influence.py",
        "return obj.per_example_dot(theta, s, idx) / obj.n",
        "return -obj.per_example_dot(theta, s, idx) / obj.n", "prediction with the sign flipped"),
    Bug("scale-lost", "1/n lost", f"{LIB}/influence.py",
        "return obj.per_example_dot(theta, s, idx) / obj.n",
        "return obj.per_example_dot(theta, s, idx)", "prediction without 1/n"),
    Bug("scale-n-1", "1/n -> 1/(n-1)", f"{LIB}/influence.py",
        "return obj.per_example_dot(theta, s, idx) / obj.n",
        "return obj.per_example_dot(theta, s, idx) / (obj.n - 1)", "prediction scaled by 1/(n-1)"),
    Bug("explicit-damping", "damping ignored (explicit)", f"{LIB}/solvers.py",
        "A = H + damping * torch.eye", "A = H + 0.0 * torch.eye", "solve_explicit ignores damping"),
    Bug("cg-damping", "damping ignored (CG)", f"{LIB}/solvers.py",
        "return out + damping * v if damping else out", "return out", "cg ignores damping"),
    Bug("lissa-damping", "damping ignored (LiSSA)", f"{LIB}/solvers.py",
        "HX = HX + damping * X", "HX = HX", "lissa computes (H + lambda I) as H"),
    Bug("lissa-damping-mismap", "damping mis-mapped (LiSSA d -> d*scale)", f"{LIB}/solvers.py",
        "HX = HX + damping * X", "HX = HX + (damping / scale) * X",
        "lissa applies damping/scale (the paper's d taken for lambda the other way round)"),
    Bug("lissa-damping-dropped", "damping ignored (LiSSA)", f"{LIB}/influence.py",
        "repeats=repeats, damping=damping, seed=seed", "repeats=repeats, damping=0.0, seed=seed",
        "inverse_hvp_lissa does not pass damping on"),
    Bug("step-cg-damping", "damping ignored (CG)", f"{LIB}/steps.py",
        'damping=cg["damping"], tol=cg["tol"]', 'damping=0.0, tol=cg["tol"]',
        "the influence_cg step drops the configured damping"),
    Bug("step-lissa-damping", "damping ignored (LiSSA)", f"{LIB}/steps.py",
        'damping=lissa["damping"], seed=lissa["seed"],\n                            progress',
        'damping=0.0, seed=lissa["seed"],\n                            progress',
        "the influence_lissa step drops the configured damping"),
    Bug("hessian-l2", "L2 dropped from the Hessian", f"{LIB}/logistic.py",
        "        Hd.diagonal().add_(self.l2)\n", "", "explicit Hessian without l2 I"),
    Bug("hvp-fn-l2", "L2 dropped from the HVP", f"{LIB}/logistic.py",
        "return lambda v: _logistic_hvp(X, P, v, k, d) + l2 * v",
        "return lambda v: _logistic_hvp(X, P, v, k, d)", "hvp_fn (CG's matvec) without l2 v"),
    Bug("hvp-l2", "L2 dropped from the HVP", f"{LIB}/logistic.py",
        "return _logistic_hvp(X, P, v, self.n_classes, self.d) + self.l2 * v",
        "return _logistic_hvp(X, P, v, self.n_classes, self.d)", "hvp without l2 v"),
    Bug("minibatch-hvp-l2", "L2 dropped from the HVP", f"{LIB}/logistic.py",
        "return out + self.l2 * V", "return out", "LiSSA's minibatch HVP without l2 v"),
    Bug("loo-early", "LOO returns before its certificate", f"{LIB}/loo.py",
        "finished = (exact & (gm <= tol)) | (st >= max_steps)",
        "finished = (exact & (gm <= 1e4 * tol)) | (st >= max_steps)",
        "LOO stops at max|grad| <= 1e4 tol"),
    Bug("loo-wrong-objective", "LOO returns before its certificate", f"{LIB}/loo.py",
        "return (n * D - self.obj.point_grads(T, idx)) / (n - 1) + self.obj.reg_grad(T)",
        "return (n * D - self.obj.point_grads(T, idx)) / n + self.obj.reg_grad(T)",
        "LOO certifies the gradient of the wrong objective (1/n instead of 1/(n-1))"),
    Bug("float32-mnist", "float32 where float64 is promised", f"{LIB}/data.py",
        ".to(torch.float64) / 255.0", ".to(torch.float32) / 255.0", "MNIST inputs in float32"),
    Bug("float32-random", "float32 where float64 is promised", f"{LIB}/data.py",
        "X = torch.randn(n, n_features, generator=g, dtype=torch.float64) * input_std",
        "X = torch.randn(n, n_features, generator=g, dtype=torch.float32) * input_std",
        "random datasets in float32"),
]


def copy_tree(dst: Path) -> None:
    """Tracked and untracked (not ignored) files of the working tree, as they are now."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         check=True, stdout=subprocess.PIPE).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = REPO / rel
        if not src.is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def apply(root: Path, bug: Bug) -> None:
    p = root / bug.path
    text = p.read_text()
    count = text.count(bug.old)
    if count != 1:
        raise SystemExit(f"bug {bug.name}: {bug.old!r} occurs {count} times in {bug.path}, not once")
    p.write_text(text.replace(bug.old, bug.new))


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[list[str], str, float]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                          "-m", "not slow", *tests], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", res.stdout, re.M)))
    if res.returncode not in (0, 1):  # collection error, usage error: report it as caught by all
        failed = failed or [f"(pytest exit {res.returncode})"]
    return failed, res.stdout, time.perf_counter() - t0


def short(test_id: str) -> str:
    return test_id.replace("tests/", "").replace(".py::", "::")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bugs", help="comma-separated bug names (default: all)")
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, help="test files to run per bug")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--list", action="store_true", help="list the bugs and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = ap.parse_args(argv)
    if args.list:
        for b in BUGS:
            print(f"{b.name:24s} {b.bug_class:40s} {b.path}: {b.what}")
        return 0
    bugs = BUGS if not args.bugs else [b for b in BUGS if b.name in args.bugs.split(",")]
    base = Path(tempfile.mkdtemp(prefix="inject_bugs_"))
    try:
        clean = base / "clean"
        copy_tree(clean)
        failed, out, sec = run_tests(clean, args.tests, args.timeout)
        print(f"unchanged code: {'PASS' if not failed else 'FAIL ' + ', '.join(failed)} ({sec:.0f} s, "
              f"{' '.join(args.tests)})", flush=True)
        if failed:
            print(out[-3000:])
            return 1
        rows, missed = [], []
        for bug in bugs:
            root = base / bug.name
            shutil.copytree(clean, root)
            apply(root, bug)
            failed, out, sec = run_tests(root, args.tests, args.timeout)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            contract = [short(f) for f in failed if f.startswith("tests/test_contract.py")]
            other = [short(f) for f in failed if not f.startswith("tests/test_contract.py")]
            if not failed:
                missed.append(bug.name)
            rows.append((bug, contract, other))
            print(f"{bug.name}: {len(failed)} failing ({sec:.0f} s)", file=sys.stderr, flush=True)
        print()
        print("| Bug | Class | One-line change | Failing tests in test_contract.py | Other failing tests |")
        print("| --- | --- | --- | --- | --- |")
        for bug, contract, other in rows:
            c = "<br>".join(x.split("::", 1)[1] for x in contract) or "**none**"
            o = f"{len(other)}: " + ", ".join(other[:4]) + (", ..." if len(other) > 4 else "") if other else "0"
            what = bug.what.replace("|", "\\|")  # a pipe would split the Markdown cell
            print(f"| `{bug.name}` | {bug.bug_class} | `{Path(bug.path).name}`: {what} | {c} | {o} |")
        print()
        if missed:
            print(f"NOT CAUGHT: {', '.join(missed)}")
            return 1
        print(f"every one of the {len(rows)} bugs makes at least one test fail")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
