"""infcore.progress: the loggers of the long steps."""

from __future__ import annotations

from infcore.progress import Progress


def test_progress_reports_rate_and_eta():
    lines = []
    p = Progress(lines.append, "LOO", 10, unit="points", every=0.0)
    p(5)
    p(10)
    assert "LOO: 5/10 points (50%)" in lines[0] and "points/s" in lines[0] and "ETA" in lines[0]
    assert "ETA 0s" in lines[1]
