"""The CNN's device program (infcore.cnn.plan, infcore.cnn.graphs) on the CPU.

Everything of the fast CUDA path but the capture itself runs here: the host-made blocks of
minibatch indices and Adam step sizes, and the step on static buffers with a device-side
position counter (engine "blocks", the math the CUDA graph captures). On the CPU the
program gives the eager loop's numbers bitwise, in float64 and in float32 (the measured
tolerance is 0), across block boundaries, chunks and both stream settings.
"""

from __future__ import annotations

import pytest
import torch
from infcore import cnn
from infcore.cnn import graphs
from infcore.cnn.plan import BatchPlan, IndexStream, adam_step_sizes, block_steps
from infcore.cnn.train import _masked_objective, _run

W = 2
L2 = 1e-3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one thread is faster, and spares a shared machine OpenMP contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_data(n=24, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


# ------------------------------------------------------------------------------ the plan


@pytest.mark.parametrize("n,bs,start,exclude", [(10, 3, 0, -1), (10, 3, 4, -1), (24, 8, 5, 7),
                                                (9, 9, 2, -1), (12, 5, 0, 11)])
def test_index_stream_blocks_equal_batch_stream(n, bs, start, exclude):
    steps = 17
    ref = torch.stack(list(cnn.batch_stream(n, bs, steps, seed=4, start_step=start,
                                            exclude=exclude)))
    s = IndexStream(n, bs, seed=4, start_step=start, exclude=exclude)
    parts = [s.take(k) for k in (1, 0, 5, 2, 9)]  # block boundaries inside and across epochs
    assert [p.shape for p in parts] == [(k, bs) for k in (1, 0, 5, 2, 9)]
    assert torch.equal(torch.cat(parts), ref)
    if exclude >= 0:
        assert exclude not in ref.reshape(-1).tolist()


def test_batch_plan_shared_and_independent_rows():
    remove = [3, cnn.CONTROL, 0]
    shared = BatchPlan(24, 8, 11, 2, remove, independent=False)
    assert shared.row_shape() == (8,)
    assert torch.equal(shared.take(6), torch.stack(list(cnn.batch_stream(24, 8, 6, 11, 2))))
    ind = BatchPlan(24, 8, 11, 2, remove, independent=True)
    assert ind.row_shape() == (3, 8)
    got = torch.cat([ind.take(4), ind.take(3)])
    assert got.shape == (7, 3, 8)
    for j, r in enumerate(remove):
        ref = torch.stack(list(cnn.batch_stream(24, 8, 7, cnn.run_seed(11, r), 2, r)))
        assert torch.equal(got[:, j], ref)


def test_adam_step_sizes_follow_schedule_and_bias_correction():
    lrs = adam_step_sizes(lambda t: cnn.lr_at(t, 0.1, (3,), (0.5,)), first_step=1, first_t=2, k=4)
    assert lrs.dtype == torch.float64 and lrs.shape == (4,)
    for i, t in enumerate(range(2, 6)):
        lr = 0.1 if 1 + i < 3 else 0.05
        assert float(lrs[i]) == pytest.approx(lr * (1 - 0.999**t) ** 0.5 / (1 - 0.9**t), rel=1e-15)


def test_block_steps_bounds():
    assert block_steps(1, 500, 500_000) == 4096
    assert block_steps(101, 500, 30_000) == (64 << 20) // (101 * 500 * 8) == 166
    assert block_steps(1, 500, 7) == 7
    assert block_steps(10**6, 500, 100) == 1


# ---------------------------------------------------------------------- program == eager


def _args(x, y, m_remove, steps, independent, lr_fn, start=0):
    dims = (W, 1, 10)
    remove = torch.tensor(m_remove)
    return (x, y, remove, steps, 8, 5, lr_fn, L2, dims, start, start, 4, None, "loop",
            independent)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("independent", [False, True])
def test_program_equals_eager_loop_across_blocks(dtype, independent):
    """run_program (blocks of 5 steps) gives _run's parameters, Adam state and trace bitwise."""
    x, y = tiny_data(dtype=dtype)
    theta0 = cnn.init_params(1, width=W, dtype=dtype)
    remove = [3, cnn.CONTROL, 17]
    states = []
    for runner in ("eager", "program"):
        theta = theta0.repeat(3, 1)
        adam = cnn.AdamState.zeros_like(theta)
        adam.step = 7  # resume: bias correction starts at t = 8
        args = _args(x, y, remove, 23, independent,
                     lambda t: cnn.lr_at(t, 5e-3, (10, 20), (0.5, 0.1)), start=3)
        if runner == "eager":
            trace = _run(theta, adam, *args)
        else:
            trace = graphs.run_program(theta, adam, *args, engine="blocks", max_block=5)
        states.append((theta, adam, trace))
    (ta, aa, tra), (tb, ab, trb) = states
    assert torch.equal(ta, tb) and torch.equal(aa.m, ab.m) and torch.equal(aa.v, ab.v)
    assert aa.step == ab.step == 30
    assert tra == trb and [s for s, _ in tra] == [7, 11, 15, 19, 23, 26]
    assert (ta - theta0).abs().max() > 1e-3  # the runs moved


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_train_and_retrain_engines_agree(dtype):
    x, y = tiny_data(dtype=dtype)
    kw = dict(steps=13, batch_size=8, lr=1e-2, decay_steps=(6,), decay_factors=(0.1,), l2=L2,
              width=W, log_every=5)
    calls = {"eager": [], "blocks": []}
    res = {e: cnn.train(x, y, engine=e, progress=lambda a, b, m, e=e: calls[e].append((a, b, m)),
                        **kw) for e in calls}
    assert torch.equal(res["eager"].theta, res["blocks"].theta)
    assert res["eager"].trace == res["blocks"].trace
    assert calls["eager"] == calls["blocks"] and len(calls["eager"]) == 3
    tr = res["eager"]
    xt, yt = tiny_data(2, dtype=dtype, seed=7)
    for streams in ("shared", "independent"):
        kw = dict(steps=9, lr=5e-3, batch_size=8, l2=L2, seed=2, width=W, x_eval=xt,
                  y_eval=yt, chunk=2, streams=streams, log_every=4)
        a = cnn.retrain(tr.theta, tr.adam, x, y, [5, cnn.CONTROL, 20], engine="eager", **kw)
        b = cnn.retrain(tr.theta, tr.adam, x, y, [5, cnn.CONTROL, 20], engine="blocks", **kw)
        assert torch.equal(a.theta, b.theta) and torch.equal(a.eval_losses, b.eval_losses)
        assert torch.equal(a.adam.v, b.adam.v) and a.adam.step == b.adam.step == 22
        assert a.trace == b.trace
    # grouped convolutions (the CUDA path's forward) in the program: float64 to 1e-10
    if dtype == torch.float64:
        g = cnn.retrain(tr.theta, tr.adam, x, y, [5, cnn.CONTROL, 20], engine="blocks",
                        impl="grouped", **kw)
        torch.testing.assert_close(g.theta, a.theta, rtol=0, atol=1e-10)


def test_step_program_one_step_is_adam_on_the_masked_objective():
    """StepProgram.step (the captured math) by hand: block position, mask, Adam, trace."""
    x, y = tiny_data()
    theta = cnn.init_params(2, width=W, dtype=torch.float64).repeat(2, 1)
    adam = cnn.AdamState.zeros_like(theta)
    remove = torch.tensor([4, cnn.CONTROL])
    prog = graphs.StepProgram(theta, adam, x, y, remove, (8,), 3, L2, (W, 1, 10), "loop")
    idx = torch.stack([torch.arange(8), torch.arange(8, 16), torch.arange(16, 24)])
    prog.load(idx, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    ref_theta = theta.clone()
    ref_adam = cnn.AdamState.zeros_like(theta)
    prog.step()
    prog.step()  # batch 1 (points 8..15), step size 0.2
    for k, lrt in enumerate((0.1, 0.2)):
        th = ref_theta.clone().requires_grad_(True)
        obj = _masked_objective(th, x[idx[k]], y[idx[k]], idx[k], remove, L2,
                                          cnn.weight_mask(W, dtype=torch.float64), (W, 1, 10))
        (grad,) = torch.autograd.grad(obj, th)
        ref_adam.m.mul_(0.9).add_(grad, alpha=0.1)
        ref_adam.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        ref_theta -= lrt * ref_adam.m / (ref_adam.v.sqrt() + 1e-8)
        assert float(prog.obj[k]) == pytest.approx(float(obj.detach()), rel=1e-14)
    torch.testing.assert_close(theta, ref_theta, rtol=0, atol=1e-14)
    assert int(prog.pos) == 2


# ------------------------------------------------------------------------------- engines


def test_resolve_engine():
    assert graphs.resolve_engine("auto", "cpu") == "eager"
    assert graphs.resolve_engine("auto", torch.device("cuda")) == "graph"
    assert graphs.resolve_engine("blocks", "cpu") == "blocks"
    with pytest.raises(ValueError, match="engine must be one of"):
        graphs.resolve_engine("fast", "cpu")
    with pytest.raises(RuntimeError, match="engine 'graph' .* needs a CUDA device"):
        graphs.resolve_engine("graph", "cpu")


def test_graph_engine_on_cpu_fails_before_any_step():
    x, y = tiny_data()
    theta0 = cnn.init_params(0, width=W, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        cnn.train(x, y, 3, theta0=theta0, batch_size=8, width=W, engine="graph")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        cnn.retrain(theta0, None, x, y, [1], steps=3, lr=1e-3, batch_size=8, width=W,
                    engine="graph")
