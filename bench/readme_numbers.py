"""Write README.md's results table and "Seconds per step" line from a run's outputs.

The numbers come from a copy of a default run's outputs committed under ``docs/outputs/``
(``results/`` paths without the leading ``results/``; the LOO factor's log in
``factor_logs/`` and the run's Snakemake log beside them), so README and outputs can be compared on a fresh clone:

    snakemake --cores 2                          # a default run (about 21 minutes on 2 cores)
    python bench/readme_numbers.py --collect .   # copy its outputs to docs/outputs/
    python bench/readme_numbers.py               # rewrite README.md between the markers
    python bench/readme_numbers.py --check       # exit 1 (and a diff) if README disagrees

The table has one row per panel of ``figure2.md`` (a 'CNN (certified minimum)' panel appears
when the run has one), values as ``figure2.md`` prints them; a panel of the paper's figure that
the run does not have ('CNN': days on CPU) gets a row from config/config.yaml's
``paper_figure`` experiment, marked "not in this run". ``tests/test_readme_numbers.py`` runs
the check.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "outputs"
README = REPO / "README.md"
MARKERS = {"results": ("<!-- results:begin -->", "<!-- results:end -->"),
           "timing": ("<!-- timing:begin -->", "<!-- timing:end -->")}
METHOD = {"cg": "CG", "lissa": "LiSSA"}
# Figure 2's panels and the paper_figure role (config) whose experiment each one shows.
ROLE = {"Linear (exact)": "linear", "Linear (approx)": "linear", "CNN": "cnn",
        "CNN (certified minimum)": "certified"}
HEADER = ["Panel", "Pearson R (ours)", "Pearson R (paper)", "Spearman", "Slope", "n (train)",
          "k (retrained)", "Test index"]


# -- reading the outputs ---------------------------------------------------------------------
def md_table(text: str) -> list[dict]:
    """Rows of the first Markdown table in ``text`` as dicts by column title."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(cols, (c.strip() for c in ln.strip("|").split("|")), strict=True))
            for ln in lines[2:]]


def timing_panel(fig2: dict) -> dict:
    """The panel whose run the timing line describes: the first CG panel of a linear model."""
    return next(p for p in fig2["panels"] if p["method"] == "cg")


def needed_files(fig2: dict) -> list[str]:
    p = timing_panel(fig2)
    e, t = p["experiment"], p["test_index"]
    return ["figure2.md", "figure2.json", f"{e}/train/train.json", f"{e}/influence_cg/test_{t}.json",
            f"{e}/influence_lissa/test_{t}.json", f"{e}/loo/loo.json", f"{e}/loo/loo.csv",
            f"logs/loo_factor/{e}.log"]


def stored(rel: str) -> str:
    """Where a needed file lies under docs/outputs/ ('logs/' and 'results/' folders are
    git-ignored anywhere: the log goes to factor_logs/)."""
    return "factor_logs/" + rel.rsplit("/", 1)[-1] if rel.startswith("logs/") else rel


def collect(run: Path, dest: Path = RESULTS) -> list[Path]:
    """Copy what this script reads from a run folder (its results/, logs/ and newest
    .snakemake log) to ``dest``."""
    fig2 = json.loads((run / "results" / "figure2.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for rel in needed_files(fig2):
        src = run / rel if rel.startswith("logs/") else run / "results" / rel
        (dest / stored(rel)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest / stored(rel))
        out.append(dest / stored(rel))
    logs = [p for p in sorted((run / ".snakemake" / "log").glob("*.snakemake.log"))
            if "steps (100%) done" in (t := p.read_text()) and "Rule: paper_figure" in t]
    if not logs:
        raise SystemExit(f"no log of a completed run with paper_figure in {run / '.snakemake' / 'log'}")
    shutil.copy(logs[-1], dest / "snakemake.log")
    return out + [dest / "snakemake.log"]


def wall_seconds(log: str) -> float:
    """First to last job timestamp of a Snakemake log ('[Thu Dec  3 06:14:38 2026]')."""
    stamps = [datetime.strptime(" ".join(m.split()), "%a %b %d %H:%M:%S %Y")
              for m in re.findall(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", log, re.M)]
    if "steps (100%) done" not in log or len(stamps) < 2:
        raise ValueError("the Snakemake log is not that of a completed run")
    return (stamps[-1] - stamps[0]).total_seconds()


# -- writing ----------------------------------------------------------------------------------
def fmt_int(s) -> str:
    return f"{int(s):,}" if str(s).strip().lstrip("-").isdigit() else str(s)


def results_table(results: Path = RESULTS, config: Path = REPO / "config" / "config.yaml") -> str:
    import yaml

    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    from infcore.config import dataset_shape

    fig2 = json.loads((results / "figure2.json").read_text())
    method = {p["panel"]: p["method"] for p in fig2["panels"]}
    rows = md_table((results / "figure2.md").read_text())
    out = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    for r in rows:
        label = r["Panel"] + (f", {METHOD[method[r['Panel']]]}" if method.get(r["Panel"]) in METHOD else "")
        out.append("| " + " | ".join([label, r["Pearson R (ours)"], r["Pearson R (paper)"], r["Spearman"],
                                      r["Slope"], fmt_int(r["n (train)"]), fmt_int(r["k (retrained)"]),
                                      r["Test index"]]) + " |")
    cfg = yaml.safe_load(config.read_text())
    shown = {r["Panel"] for r in rows}
    for panel, paper in fig2["paper_pearson"].items():
        name = (cfg.get("paper_figure") or {}).get(ROLE.get(panel, ""))
        if panel in shown or name not in cfg["experiments"]:
            continue
        exp = cfg["experiments"][name]
        n_train, _ = dataset_shape(exp["dataset"], None, exp.get("model", "logreg"))
        out.append(f"| {panel} | not in this run ({name}) | {paper} | | | {n_train:,} | {exp['top_k']:,} | "
                   f"{exp['test_indices'][0]} |")
    return "\n".join(out)


def timing_line(results: Path = RESULTS) -> str:
    fig2 = json.loads((results / "figure2.json").read_text())
    p = timing_panel(fig2)
    e, t = p["experiment"], p["test_index"]
    train = json.loads((results / e / "train" / "train.json").read_text())
    cg = json.loads((results / e / "influence_cg" / f"test_{t}.json").read_text())
    lissa = json.loads((results / e / "influence_lissa" / f"test_{t}.json").read_text())
    loo = json.loads((results / e / "loo" / "loo.json").read_text())
    import csv

    with open(results / e / "loo" / "loo.csv", newline="") as f:
        steps = [int(r["steps"]) for r in csv.DictReader(f) if int(r["test_index"]) == t]
    hist = {s: steps.count(s) for s in sorted(set(steps))}
    chord = "; ".join(f"{c} points in {s} chord step{'s' if s != 1 else ''}" for s, c in hist.items())
    m = re.search(r"chord factor \(.*\) in ([\d.]+) s", (results / stored(f"logs/loo_factor/{e}.log")).read_text())
    factor = f" after a {float(m.group(1)):.1f} s factorization" if m else ""
    log = (results / "snakemake.log").read_text()
    wall = wall_seconds(log)
    m = re.search(r"(\d+) of \1 steps \(100%\) done", log)
    jobs = int(m.group(1)) if m else 0
    scratch = ", from the raw files to the figure" if "Rule: data)" in log else ""
    certified = "for every point" if loo["all_converged"] else f"{loo['not_certified']} points not certified"
    return (f"Seconds per step in that run (2 cores; `{e}`, test point {t}): fit {train['seconds']:.1f} "
            f"(to max\\|grad\\| {train['grad_maxnorm']:.1g}), CG {cg['seconds']:.1f} ({cg['iterations']} "
            f"iterations), LiSSA {lissa['seconds']:.1f}, LOO {loo['seconds_per_point']:.3f} per certified "
            f"point (max\\|grad\\| <= {loo['max_grad_maxnorm']:.2g} {certified}; {chord}){factor}; "
            f"{wall:.0f} s wall for the {jobs} jobs of `docs/outputs/snakemake.log`{scratch}.")


def render(readme: str, results: Path = RESULTS) -> str:
    blocks = {"results": results_table(results), "timing": timing_line(results)}
    for key, (begin, end) in MARKERS.items():
        pat = re.compile(re.escape(begin) + r"\n.*?\n" + re.escape(end), re.S)
        if len(pat.findall(readme)) != 1:
            raise SystemExit(f"README.md needs exactly one {begin} ... {end} block")
        readme = pat.sub(lambda _m, k=key, b=begin, e=end: f"{b}\n{blocks[k]}\n{e}", readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    ap.add_argument("--collect", metavar="RUN", type=Path,
                    help="first copy the outputs of the run in folder RUN to docs/outputs/")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.collect:
        for p in collect(args.collect, args.results):
            print(f"copied {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
    old = args.readme.read_text()
    new = render(old, args.results)
    if args.check:
        if new != old:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       "README.md", "README.md (from docs/outputs)"))
            print("README.md disagrees with docs/outputs: run python bench/readme_numbers.py")
            return 1
        print("README.md agrees with docs/outputs")
        return 0
    if new != old:
        args.readme.write_text(new)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
