"""One-GPU check of the CNN's fast path: CPU-CUDA agreement, step times, projected protocol time.

On one CUDA GPU, in a few minutes (bench/gpu_check.sh caps it at 6):

1. agreement of the CPU reference (eager loop, float64 and float32) and the GPU (captured
   program, grouped convolutions) on a small instance: the stacked forward, one HVP, the
   parameter change of 3 batched retraining steps (2 removed points + the control, one
   stream per run); float64 must agree to 1e-10 (relative), float32 to a provisional 1e-4;
   and on the GPU itself the captured program against the eager loop (float64);
2. seconds per training step (batch 500) and per stacked LOO step at m = 101 (100 points +
   the control), for the engines eager (step-by-step loop), blocks (device program,
   uncaptured) and graph (captured), on random data of the paper's shape; seconds of one
   full-data float64 HVP and of the JVP pass (influence);
3. the projected wall time of the paper's protocol on this GPU per engine: 500,000 training
   steps + 30,000 steps of the 101-run stack + 100 CG iterations + the JVP pass
   (infcore.cnn.devcheck.project). A projection, not a measured protocol run.

Exit status: 0 all checks pass, 1 an agreement check failed, 2 no CUDA device (nothing run).
``--device cpu --tiny`` runs every part but the capture on the CPU at a tiny size (a test
of the script, not a measurement).

Usage::

    bash bench/gpu_check.sh                        # = python bench/gpu_check.py
    python bench/gpu_check.py --json results/gpu_check.json
    python bench/gpu_check.py --device cpu --tiny  # CPU-side parts, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "workflow", "scripts"))

from infcore.cnn import devcheck  # noqa: E402

NO_CUDA = 2

TINY = {"m": 3, "n": 32, "batch_size": 8, "width": 2, "hvp_batch_size": 16,
        "steps": {"eager": (1, 3), "blocks": (1, 3), "graph": (1, 3)}}
FULL = {"m": 101, "n": 5500, "batch_size": 500, "width": 8, "hvp_batch_size": 100,
        "steps": {"eager": (5, 25), "blocks": (10, 60), "graph": (50, 400)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a test of the script)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False): this check needs one GPU; nothing was "
              f"run (exit {NO_CUDA}). The CPU-side parts: --device cpu --tiny.",
              file=sys.stderr)
        return NO_CUDA
    dev = torch.device(a.device)
    size = TINY if a.tiny else FULL
    engines = ["eager", "blocks"] + (["graph"] if dev.type == "cuda" else [])
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({name}), torch {torch.__version__}, sizes {'tiny' if a.tiny else 'paper'}")

    rows = devcheck.agreement(a.device, devcheck.small_instance())
    print("\nagreement, CPU reference vs target (max |diff| / max |reference|):")
    for r in rows:
        print(f"  {'ok  ' if r.ok else 'FAIL'} {r.dtype:8} {r.check:60} {r.rel:.2e} "
              f"(bound {r.bound:.0e}, max |diff| {r.max_abs:.2e})")

    t = devcheck.step_timings(a.device, engines, m=size["m"], n=size["n"],
                              batch_size=size["batch_size"], width=size["width"],
                              steps=size["steps"], streams=("independent", "shared"))
    inf = devcheck.influence_timings(a.device, n=size["n"], width=size["width"],
                                     hvp_batch_size=size["hvp_batch_size"])
    print(f"\nseconds per step (random data n = {t['n']}, batch {t['batch_size']}, width "
          f"{t['width']}; marginal cost between two run lengths, setup excluded):")
    print(f"  {'engine':8} {'train step':>12} {'LOO m=' + str(t['m']) + ' indep.':>18} "
          f"{'LOO shared':>12} {'setup (LOO)':>12}")
    for e in engines:
        li, ls = t["loo"]["independent"][e], t["loo"]["shared"][e]
        print(f"  {e:8} {t['train'][e]['step_s']:12.2e} {li['step_s']:18.2e} "
              f"{ls['step_s']:12.2e} {li['setup_s']:11.2f}s")
    print(f"  influence: one HVP (float64, batches of {inf['hvp_batch_size']}) "
          f"{inf['hvp_s']:.3f} s, JVP pass {inf['jvp_all_s']:.3f} s")

    proj = {}
    for e in engines:
        for s in ("independent", "shared"):
            proj[f"{e}/{s}"] = devcheck.project(t["train"][e]["step_s"],
                                                t["loo"][s][e]["step_s"], inf["hvp_s"],
                                                inf["jvp_all_s"])
    what = ("the paper's protocol" if not a.tiny else
            "tiny sizes: the arithmetic of the projection only, not the paper's network")
    print(f"\nprojected wall time ({what}): 500,000 training steps + 30,000 steps of the "
          f"{t['m']}-run stack + 100 CG iterations + JVP; a projection, not a run:")
    for k, p in proj.items():
        print(f"  {k:20} train {p['train'] / 60:8.2f} min  LOO+control "
              f"{p['loo_and_control'] / 60:8.2f} min  influence {p['influence'] / 60:6.2f} min"
              f"  total {p['total'] / 60:8.2f} min")

    ok = all(r.ok for r in rows)
    wall = time.perf_counter() - t_start
    print(f"\n{'all agreement checks pass' if ok else 'AGREEMENT CHECK FAILED'}; "
          f"this check took {wall:.0f} s")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"device": str(dev), "device_name": name, "torch": torch.__version__,
                       "tiny": a.tiny, "agreement": devcheck.rows_as_dicts(rows),
                       "step_timings": t, "influence_timings": inf,
                       "projected_seconds": proj, "ok": ok, "wall_s": wall}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
