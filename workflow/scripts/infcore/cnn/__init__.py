"""The CNN of Figure 2 (right panel): All-CNN-C on 10% of MNIST, influence and LOO retraining.

Everything CNN-specific lives in this package; nothing here knows about Snakemake or files.
One layer per module:

* :mod:`.model`: the network, its flat parameter layout, initialisation, stacked forwards;
* :mod:`.train`: Adam, the minibatch stream, training and (batched) LOO retraining;
* :mod:`.plan`: the minibatch indices and Adam step sizes of many steps, made on the host;
* :mod:`.graphs`: the device program of a step (no host sync per step), CUDA graph capture,
  and the engines ``eager`` / ``blocks`` / ``graph`` of ``train`` and ``retrain``;
* :mod:`.devcheck`: CPU-device agreement, step timings, projections (``bench/gpu_check.py``);
* :mod:`.influence`: the objective, HVPs, ``g_i . s`` dots, CG influence, LOO differences;
* :mod:`.steps`: the workflow's CNN steps (what the ``cnn_*`` rule scripts call).

The paper's MNIST subset is loaded by :func:`infcore.data.load_small_mnist`. The public
names of the first three modules are re-exported here (``from infcore import cnn;
cnn.retrain(...)``).

Protocol (Koh & Liang 2017, ``influence-release/scripts/train_mnist.py``):

* Data: the 55,000 MNIST training images after the first 5,000 (validation); a random 10%
  of them (``np.random.seed(0); np.random.shuffle(arange(55000))[:5500]``), n = 5,500;
  pixels / 255, images ``1 x 28 x 28``. The test set is the usual 10,000 images.
* Model (:class:`AllCNNC`, 2,616 parameters at width 8): five 3x3 convolutions with 8
  channels, strides 1, 2, 1, 2, 1, no padding, tanh; a 1x1 convolution to 10 channels, tanh;
  global average pooling; a 10x10 linear layer with bias. Initialisation as in the original:
  truncated normal weights (std ``2/sqrt(fan_in)`` for convolutions, ``1/sqrt(10)`` for the
  linear layer, truncated at two standard deviations), zero biases.
* Objective: ``L(theta) = (1/n) sum_i CE_i(theta) + (l2/2) ||w||^2`` with ``l2 = 0.001`` on
  the weights only (not on the biases).
* Training: Adam (TensorFlow 1 form, see :func:`adam_update`), learning rate ``1e-4``,
  batch 500, 500k steps, learning rate x0.1 from step 110k and x0.01 from step 220k.
* Influence: ``s = (H + lambda I)^{-1} g_test`` by CG with ``lambda = 0.01``; ``H`` is the
  Hessian of ``L`` over all n points, computed in minibatches of 100 (double backward) and
  averaged; ``g_test`` is the gradient of the unregularised loss on test point 6558;
  ``pred_i = (1/n) g_i^T s`` with ``g_i`` the gradient of point i's regularised loss
  ``CE_i + (l2/2)||w||^2``. ``pred_i`` predicts ``L_test(theta_-i) - L_test(theta_hat)``.
* LOO: the 100 points with the largest ``|pred_i|``; for each, continue training from the
  final parameters and Adam state for 30,000 steps without the point, at the learning rate the
  schedule had reached (1e-6 after 500k steps; the original restores its TensorFlow
  checkpoint, which holds the learning-rate variable and Adam's moments).

What we add (see ``docs/cnn.md``):

* A *control*: the same continued training with no point removed. Removal index ``-1``
  (:data:`CONTROL`) means "remove nothing".
* Two stream settings (``retrain(streams=...)``). ``"independent"`` (the workflow's default
  for ``mnist_cnn``, the original's situation): each run draws its own epoch permutations
  of the points it keeps. ``"shared"``: minibatches are drawn once from epoch permutations
  of all n points (seeded); a run that removes point i uses the same minibatches with i
  masked out (its weight set to zero and the batch mean taken over the remaining points).
  Averaged over the sampling, each remaining point has weight ``1/(n-1)``, so the masked
  gradient is an unbiased estimate of the LOO objective's gradient, and the control cancels
  the drift of continued training exactly.
* Batched LOO retraining: the m runs of a call are trained in one program as m stacked
  copies of the network (grouped convolutions), each with its own Adam state.
* On CUDA the steps run as a captured CUDA graph fed by blocks of precomputed minibatch
  indices (:mod:`.graphs`; ``engine="auto"``); on the CPU the eager loop.
"""

from .graphs import ENGINES, resolve_engine
from .influence import (
    CurvatureMonitor,
    InfluenceResult,
    influence,
    loo_differences,
    loss_grad,
    make_hvp,
    objective,
    per_example_grads,
    train_point_dots,
)
from .model import (
    CONTROL,
    PAPER,
    AllCNNC,
    accuracy,
    example_losses,
    flatten_module,
    init_params,
    layer_specs,
    load_flat,
    num_params,
    param_shapes,
    split_params,
    stacked_logits,
    weight_mask,
)
from .train import (
    AdamState,
    TrainResult,
    adam_update,
    batch_stream,
    lr_at,
    retrain,
    run_seed,
    train,
)

__all__ = [
    "CONTROL", "ENGINES", "PAPER", "AdamState", "AllCNNC", "CurvatureMonitor", "InfluenceResult",
    "TrainResult", "accuracy", "adam_update", "batch_stream", "example_losses",
    "flatten_module", "influence", "init_params", "layer_specs", "load_flat", "loo_differences",
    "loss_grad", "lr_at", "make_hvp", "num_params", "objective", "param_shapes",
    "per_example_grads", "resolve_engine", "retrain", "run_seed", "split_params", "stacked_logits",
    "train", "train_point_dots", "weight_mask",
]
