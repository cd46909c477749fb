"""wfio writers give the same bytes for the same content (issue 15): .pt and figures."""

from __future__ import annotations

import json

import pytest
import torch
import wfio


def test_save_torch_is_bytewise_repeatable(tmp_path):
    obj = {"theta": torch.arange(12, dtype=torch.float64).reshape(3, 4), "steps": 7}
    wfio.save_torch(obj, tmp_path / "a" / "theta.pt")
    wfio.save_torch(obj, tmp_path / "b" / "theta.pt")  # another temp file name, same bytes
    assert (tmp_path / "a" / "theta.pt").read_bytes() == (tmp_path / "b" / "theta.pt").read_bytes()
    back = wfio.load_torch(tmp_path / "a" / "theta.pt")
    assert torch.equal(back["theta"], obj["theta"]) and back["steps"] == 7
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["theta.pt"]  # no temp file


def test_timings_go_to_their_own_file(tmp_path):
    obj = {"losses": torch.ones(3), "seconds": 1.25, "setup_seconds": 0.5, "steps": 2}
    with pytest.raises(ValueError, match=r"timing entries \['seconds', 'setup_seconds'\]"):
        wfio.save_torch(obj, tmp_path / "shard.pt")
    assert not (tmp_path / "shard.pt").exists()
    wfio.save_torch(obj, tmp_path / "shard.pt", timings=tmp_path / "shard.timings.json")
    assert json.loads((tmp_path / "shard.timings.json").read_text()) == {"seconds": 1.25, "setup_seconds": 0.5}
    assert set(wfio.load_torch(tmp_path / "shard.pt")) == {"losses", "steps"}
    both = wfio.load_torch(tmp_path / "shard.pt", timings=tmp_path / "shard.timings.json")
    assert both["seconds"] == 1.25 and torch.equal(both["losses"], obj["losses"])
    first = (tmp_path / "shard.pt").read_bytes()
    wfio.save_torch({**obj, "seconds": 9.0}, tmp_path / "shard.pt", timings=tmp_path / "t.timings.json")
    assert (tmp_path / "shard.pt").read_bytes() == first  # other timings, same .pt


def test_figures_are_bytewise_repeatable(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for run in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 2])
        ax.set_title("same figure")
        wfio.save_figure(fig, tmp_path / run / "f.png", tmp_path / run / "f.pdf")
        out[run] = {s: (tmp_path / run / f"f.{s}").read_bytes() for s in ("png", "pdf")}
    assert out["a"]["pdf"][:4] == b"%PDF" and b"CreationDate" not in out["a"]["pdf"]
    assert out["a"] == out["b"]
