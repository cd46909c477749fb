"""README's results table and timing line are what bench/readme_numbers.py writes from the
run outputs committed in docs/outputs/."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from workflow_utils import REPO

spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "bench" / "readme_numbers.py")
rn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rn)


def test_readme_agrees_with_the_committed_outputs():
    readme = rn.README.read_text()
    assert rn.render(readme) == readme, "run: python bench/readme_numbers.py (README.md != docs/outputs)"


def test_every_figure2_panel_has_a_row():
    table = rn.results_table()
    panels = [r["Panel"] for r in rn.md_table((rn.RESULTS / "figure2.md").read_text())]
    assert panels and all(f"| {p}" in table for p in panels)
    fig2 = json.loads((rn.RESULTS / "figure2.json").read_text())
    for p in fig2["panels"]:  # values as figure2.md prints them
        row = next(r for r in rn.md_table(table) if r["Panel"].startswith(p["panel"]))
        assert abs(float(row["Pearson R (ours)"]) - p["pearson"]) <= 5e-6
        assert row["n (train)"].replace(",", "") == str(p["n_train"])


def test_a_changed_output_is_detected(tmp_path):
    """A changed value in figure2.md (here: the last panel's Pearson R) shows up in its row, and
    any number that changes makes the check fail."""
    res = tmp_path / "results"
    shutil.copytree(rn.RESULTS, res)
    md = (res / "figure2.md").read_text()
    last = rn.md_table(md)[-1]
    old_r = last["Pearson R (ours)"]
    lines = md.splitlines()
    i = max(k for k, ln in enumerate(lines) if ln.startswith(f"| {last['Panel']} |"))
    lines[i] = lines[i].replace(f"| {old_r} |", "| 0.91234 |", 1)
    (res / "figure2.md").write_text("\n".join(lines) + "\n")
    table = rn.results_table(res)
    row = next(r for r in rn.md_table(table) if r["Panel"].startswith(last["Panel"]))
    assert row["Pearson R (ours)"] == "0.91234" != old_r
    readme = rn.README.read_text()
    assert table in rn.render(readme, res) and table not in readme
    train = json.loads((res / "mnist_logreg/train/train.json").read_text())
    train["seconds"] += 10
    (res / "mnist_logreg/train/train.json").write_text(json.dumps(train))
    assert rn.render(readme, res) != rn.render(readme)
    assert rn.main(["--check", "--results", str(res)]) == 1


def test_wall_time_needs_a_completed_run():
    log = (rn.RESULTS / "snakemake.log").read_text()
    assert rn.wall_seconds(log) > 0
    with pytest.raises(ValueError, match="completed run"):
        rn.wall_seconds(log.replace("steps (100%) done", ""))
