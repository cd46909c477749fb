"""Small I/O helpers for the rule scripts (the only code here that knows about Snakemake).

``setup(snakemake)`` at the top of every script: the retry-test hook, logging to the rule's
log file, ``torch.set_num_threads(snakemake.threads)``. Writers are atomic: they write a
temporary file in the destination folder and ``os.replace`` it, so an output path holds
either nothing or a complete file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

FAIL_ONCE_ENV = "INFCORE_FAIL_ONCE"


def fail_once(rule: str, outputs) -> None:
    """Retry hook for tests: with ``INFCORE_FAIL_ONCE=<rule>:<marker_dir>`` the first attempt
    of that rule (per first output) creates ``<marker_dir>/<rule>-<first output path>`` (path
    separators replaced, so jobs of different experiments have different markers) and exits
    with status 1 before writing anything; later attempts find the marker and run."""
    spec = os.environ.get(FAIL_ONCE_ENV)
    if not spec:
        return
    target, _, marker_dir = spec.partition(":")
    if target != rule or not marker_dir:
        return
    first = str(list(outputs)[0]).replace("/", "__") if len(outputs) else "none"
    marker = Path(marker_dir) / f"{rule}-{first}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"{FAIL_ONCE_ENV}: failing {rule} once on purpose (marker {marker})", file=sys.stderr)
    sys.exit(1)


def setup(snakemake) -> logging.Logger:
    """Prepare a rule script: retry hook, logging to ``snakemake.log[0]``, torch threads."""
    fail_once(snakemake.rule, snakemake.output)
    logger = logging.getLogger("infcore")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if len(snakemake.log):
        fh = logging.FileHandler(str(snakemake.log[0]), mode="w")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    logger.addHandler(sh)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers = logger.handlers

    def hook(etype, value, tb):
        logger.error("rule %s failed", snakemake.rule, exc_info=(etype, value, tb))

    sys.excepthook = hook
    threads = max(1, int(snakemake.threads))
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)
    wc = dict(snakemake.wildcards.items())
    logger.info("rule %s %s, threads %d, python %s", snakemake.rule, wc, threads, sys.version.split()[0])
    return logger


@contextlib.contextmanager
def atomic(path):
    """Yield a temporary path next to ``path`` (same suffix); move it into place on success."""
    path = Path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs get the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(obj):
    """NaN/inf -> None, numpy/torch scalars -> Python, tuples -> lists (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_json(obj, path) -> None:
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_text(text: str, path) -> None:
    with atomic(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def save_csv(rows, path, columns=None) -> None:
    """Rows (dicts) to CSV; columns default to the first row's keys."""
    rows = list(rows)
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def load_csv(path) -> list[dict]:
    """CSV rows as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_timing_key(key) -> bool:
    """Entries named ``*seconds`` hold wall-clock timings (they differ between identical runs)."""
    return str(key).endswith("seconds")


def save_torch(obj, path, timings=None) -> None:
    """``torch.save`` byte-for-byte repeatably: serialized in memory (the archive's inner
    folder is then always ``archive``, not the random temporary file's name) and written
    atomically. Timing entries (top-level keys ending in ``seconds``) never go into the .pt:
    they go to the JSON file ``timings`` (whose name should say so), and without it a dict
    holding them is refused."""
    import io

    import torch

    if isinstance(obj, dict) and any(is_timing_key(k) for k in obj):
        keys = [k for k in obj if is_timing_key(k)]
        if timings is None:
            raise ValueError(f"{path}: timing entries {keys} would make the .pt differ between "
                             "identical runs; pass timings=<path of a *.timings.json>")
        save_json({k: obj[k] for k in keys}, timings)
        obj = {k: v for k, v in obj.items() if not is_timing_key(k)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())


def load_torch(path, timings=None):
    """A .pt written by :func:`save_torch`, with its timing entries from ``timings`` if given."""
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if timings is not None:
        obj.update(load_json(timings))
    return obj


def load_dataset(path):
    from infcore.data import Dataset

    return Dataset.from_dict(load_torch(path))


def save_figure(fig, *paths) -> None:
    """Save a matplotlib figure to each path (format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    for p in paths:
        fmt = Path(str(p)).suffix.lstrip(".")
        # no creation date in PDFs (the rest of matplotlib's PDF and PNG output is
        # deterministic), so a rerun writes the same bytes
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic(p) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=fmt, metadata=metadata)
    plt.close(fig)
