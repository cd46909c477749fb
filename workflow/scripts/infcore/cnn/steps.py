"""The workflow's CNN steps as plain functions (what the ``cnn_*`` rule scripts call).

Nothing here knows about Snakemake or files: a script loads its inputs (the raw MNIST files
through :func:`load_data`, the trained state with ``wfio.load_torch``), calls one step and
writes what it returns. ``settings`` is the ``params.settings`` dict of the CNN rules
(``workflow/rules/cnn.smk``): dataset, l2, width, train, device, engine, plus the parts of the
experiment the rule uses (influence, top_k, loo, test_indices). The LOO shards are joined by
:func:`infcore.steps.gather_loo` (the linear models' gather, given the control run), and the
figure's rows and record are built by :func:`infcore.tables.cnn_figure_table` (no torch: the
plotting environment runs it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..data import MnistSubset, load_small_mnist
from ..progress import Log
from ..selection import top_k
from .graphs import full_float32, resolve_engine
from .influence import influence, objective
from .model import accuracy, example_losses, num_params, stacked_logits
from .train import AdamState, TrainResult, lr_at, retrain, train


def check_device(device: str) -> str:
    """``device`` ('cpu' or 'cuda'); raises before any work when CUDA is asked for but absent."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for cnn.device: cuda (or cnn_device: cuda) but no CUDA "
                           "device is visible")
    return device


def load_data(settings: dict, mnist_root: str) -> MnistSubset:
    """The experiment's MNIST subset (float32) on its (checked) device; on CUDA, float32 in
    IEEE precision from here on (no TF32: :func:`infcore.cnn.graphs.full_float32`)."""
    dev = check_device(settings["device"])
    if dev == "cuda":
        full_float32()
    ds = settings["dataset"]
    return load_small_mnist(mnist_root, fraction=ds["fraction"], seed=ds["subset_seed"],
                            validation_size=ds["validation_size"]).to(dev)


def state_dict(res: TrainResult) -> dict:
    """The trained state (CPU tensors) that :func:`unpack_state` reads back."""
    return {"theta": res.theta.cpu(), "adam_m": res.adam.m.cpu(), "adam_v": res.adam.v.cpu(),
            "adam_step": int(res.adam.step), "global_step": int(res.global_step)}


def unpack_state(state: dict, device) -> tuple[Tensor, AdamState, int]:
    """(theta, Adam state, global step) of a :func:`state_dict`, on ``device``."""
    adam = AdamState(state["adam_m"].to(device), state["adam_v"].to(device), int(state["adam_step"]))
    return state["theta"].to(device), adam, int(state["global_step"])


def train_model(settings: dict, d: MnistSubset,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[dict, dict]:
    """Train the CNN (Adam on minibatches, step schedule); returns the state and the record."""
    t, w = settings["train"], settings["width"]
    res = train(d.x_train, d.y_train, steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"],
                decay_steps=t["decay_steps"], decay_factors=t["decay_factors"], l2=settings["l2"],
                seed=t["seed"], init_seed=t["init_seed"], width=w, log_every=t["log_every"],
                progress=progress, engine=settings.get("engine", "auto"))
    info = {
        "settings": settings, "n_train": d.x_train.shape[0], "n_test": d.x_test.shape[0],
        "dim": num_params(w), "steps": res.steps, "seconds": res.seconds,
        "seconds_per_step": res.seconds / max(res.steps, 1), "device": settings["device"],
        "engine": resolve_engine(settings.get("engine", "auto"), d.x_train.device),
        "final_lr": lr_at(res.global_step - 1, t["lr"], t["decay_steps"], t["decay_factors"]),
        "train_accuracy": accuracy(res.theta, d.x_train, d.y_train, w),
        "test_accuracy": accuracy(res.theta, d.x_test, d.y_test, w),
        "train_objective": float(objective(res.theta, d.x_train, d.y_train, settings["l2"], w)),
        "trace": res.trace,
    }
    return state_dict(res), info


def influence_test_point(settings: dict, d: MnistSubset, state: dict, t: int, log: Log = print,
                         warn: Log | None = None) -> tuple[list[dict], dict, dict]:
    """CG influence of every training point on test point t, and the ``top_k`` by |pred|.

    Returns the selection rows (rank, train_index, mnist_index, train_label, predicted), the
    tensors (pred, s, g_test; CPU) and the JSON record. A CG run that stops before ``tol``
    is reported through ``warn`` (default ``log``), not raised: the predictions use its last
    iterate (the original's ``fmin_ncg`` also truncates at negative curvature); the record
    says ``cg_converged``.
    """
    inf, w = settings["influence"], settings["width"]
    theta, _, _ = unpack_state(state, d.x_train.device)
    xt, yt = d.x_test[t:t + 1], d.y_test[t:t + 1]
    res = influence(theta, d.x_train, d.y_train, xt, yt, l2=settings["l2"], damping=inf["damping"],
                    hvp_batch_size=inf["hvp_batch_size"], tol=inf["tol"], maxiter=inf["maxiter"],
                    width=w)
    log(f"CG: converged {res.cg.converged} after {res.cg.iterations} iterations ({res.cg.message}); "
        f"min curvature {res.min_curvature:.3g}; {res.hvp_seconds:.1f} s per HVP; {res.seconds:.1f} s")
    if not res.cg.converged:
        (warn or log)(f"CG stopped before tol ({res.cg.message}): the predictions use its last "
                      "iterate (the original fmin_ncg also truncates at negative curvature)")
    with torch.no_grad():
        predicted_label = int(stacked_logits(theta, xt, w).argmax(-1).reshape(-1)[0])
    pred = res.pred.cpu()
    idx = top_k(pred, settings["top_k"])
    rows = [{"rank": r, "train_index": int(i), "mnist_index": int(d.train_source[i]),
             "train_label": int(d.y_train[i]), "predicted": float(pred[i])}
            for r, i in enumerate(idx.tolist())]
    tensors = {"pred": pred, "s": res.s.cpu(), "g_test": res.g_test.cpu()}
    info = {"test_index": t, "label": int(yt[0]), "predicted_label": predicted_label,
            "correct": predicted_label == int(yt[0]), "test_loss": res.test_loss,
            "n_train": d.x_train.shape[0], "damping": inf["damping"],
            "hvp_batch_size": inf["hvp_batch_size"], "cg": res.cg.summary(),
            "cg_converged": res.cg.converged, "cg_iterations": res.cg.iterations,
            "min_curvature": res.min_curvature, "hvp_seconds": res.hvp_seconds,
            "seconds": res.seconds}
    return rows, tensors, info


def loo_runs(settings: dict, d: MnistSubset, state: dict, remove: Sequence[int],
             log: Log = print) -> dict:
    """LOO by continued training for the points ``remove`` (``[CONTROL]``: the control run).

    Every run continues from the trained state at the learning rate ``loo.lr`` (null: where
    the schedule ended) on the same minibatch stream (``loo.streams``). Returns the shard in
    the shape :func:`infcore.steps.gather_loo` joins: indices (m,), test_indices (T,),
    base_losses (T,) = L_test(theta_hat), test_losses (m, T) after retraining, seconds; plus
    lr and steps.
    """
    lo, tr, w = settings["loo"], settings["train"], settings["width"]
    dev = d.x_train.device
    theta, adam, global_step = unpack_state(state, dev)
    lr = lo["lr"] if lo["lr"] is not None else lr_at(
        global_step - 1, tr["lr"], tr["decay_steps"], tr["decay_factors"])
    tests = torch.as_tensor(settings["test_indices"], device=dev)
    xe, ye = d.x_test[tests], d.y_test[tests]
    out = {"indices": torch.as_tensor(list(remove), dtype=torch.long),
           "test_indices": torch.as_tensor(settings["test_indices"]),
           "base_losses": example_losses(theta, xe, ye, w).cpu(),
           "test_losses": torch.zeros(0, len(settings["test_indices"])), "lr": lr,
           "steps": lo["steps"], "seconds": 0.0}
    if not len(remove):
        log("empty shard: nothing to retrain")
        return out
    engine = resolve_engine(settings.get("engine", "auto"), dev)
    log(f"{len(remove)} runs x {lo['steps']} steps at lr {lr:g} on {dev} (streams "
        f"{lo['streams']}, engine {engine})")
    res = retrain(theta, adam, d.x_train, d.y_train, remove, steps=lo["steps"], lr=lr,
                  batch_size=tr["batch_size"], l2=settings["l2"], seed=lo["seed"], width=w,
                  x_eval=xe, y_eval=ye, chunk=lo["chunk"], streams=lo["streams"],
                  engine=settings.get("engine", "auto"),
                  progress=lambda a, b, m: log(f"{a}/{b} runs: {m}"))
    out.update(test_losses=res.eval_losses.cpu(), seconds=res.seconds)
    log(f"done in {res.seconds:.1f} s")
    return out


__all__ = ["check_device", "influence_test_point", "load_data", "loo_runs",
           "state_dict", "train_model", "unpack_state"]
