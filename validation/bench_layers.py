"""Throughput of the dense layer kernels (a script, not a test).

    python validation/bench_layers.py [--quick] [--threads T]

Prints, in one run on one machine:

(a) samples/s of a LeNet5 training step (forward + backward + SGD update, batch 128:
    conv 1->20 5x5, relu, pool 2, conv 20->50 5x5, relu, pool 2, dense 800->500, relu,
    dense 500->10, softmax cross-entropy) built from ``tucker_ref.nn.functional`` in
    float32 and float64, and the same network in PyTorch CPU float32 (if torch is
    importable) with the ratio; plus where the time of our float32 step goes, kernel by
    kernel. Ours runs each relu + max-pool pair as ``relu_max_pool2d`` (pool first: the two
    commute exactly, same values and gradients); torch runs relu, then max_pool2d. Our convs
    use the cache path, ``conv2d_forward`` then ``conv2d_backward_from_cache`` (the backward
    reuses the forward's im2col matrix), as the trainer's ``Conv2d`` layer does;
(b) conv2d forward + backward GFLOP/s for the two LeNet conv shapes against the GFLOP/s
    of ``np.matmul`` on square matrices doing the same number of flops as one conv pass,
    same dtype, and the ratio (ours again through the cache path); for context also our three
    GEMMs alone and torch's conv.

NumPy's BLAS and torch use the same thread count (threadpoolctl when installed; otherwise
both keep their default, which on the 2-core reference machine is 2). Every number is the
median over several rounds after a warm-up call; the LeNet step also prints the best round,
which is the steadier figure when other processes share the cores (the load average is
printed before and after). glibc's malloc thresholds are raised for the whole process
(:func:`tucker_ref.training.runtime.raise_malloc_thresholds`, as ``tucker-ref train`` does), so
torch and tucker_ref run with the same allocator settings; ``TUCKER_REF_KEEP_MALLOC=1`` keeps
glibc's defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import nullcontext
from functools import partial
from typing import NamedTuple

import numpy as np

from tucker_ref.nn import functional as F
from tucker_ref.training.runtime import raise_malloc_thresholds

BATCH = 128
LR = 0.01
MALLOC_NOTE = "glibc's malloc thresholds raised for the whole process (both contenders): {}; TUCKER_REF_KEEP_MALLOC=1 keeps the defaults"


class Timing(NamedTuple):
    median: float
    best: float


def timed_in_turns(fns: dict, repeats: int, pause: float = 0.0) -> dict[str, Timing]:
    """Median and best wall time of each callable, timed in turns (round r times every
    callable once), so that a busy phase of a shared machine hits all of them alike.

    Before each timed call: ``pause`` seconds, then one untimed call of the same callable.
    When two libraries alternate, the other one's worker threads may still be spinning
    (OpenBLAS and OpenMP both busy-wait for a while after parallel work); the pause lets
    them go to sleep and the untimed call brings caches and thread pools back.
    """
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(pause)
            fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(float(np.median(t)), float(np.min(t))) for name, t in times.items()}


# ----------------------------------------------------------------------------------------
# LeNet5 from the functional kernels
# ----------------------------------------------------------------------------------------

LENET_SHAPES = {
    "conv1.w": (20, 1, 5, 5), "conv1.b": (20,),
    "conv2.w": (50, 20, 5, 5), "conv2.b": (50,),
    "fc1.w": (500, 800), "fc1.b": (500,),
    "fc2.w": (10, 500), "fc2.b": (10,),
}


def lenet_params(dtype, seed=0) -> dict[str, np.ndarray]:
    """PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in LENET_SHAPES.items():
        layer = name.split(".")[0]
        fan_in = int(np.prod(LENET_SHAPES[f"{layer}.w"][1:]))
        bound = 1.0 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return params


def lenet_forward_backward(p, x, labels, keep: dict | None = None):
    """Loss and gradients of LeNet5 for one batch (each kernel called once).

    ``keep``, when given, receives every intermediate array (activations, conv and pooling
    caches and their gradients) under the names :func:`kernel_breakdown` replays the kernels on.
    """
    v = {} if keep is None else keep
    v["c1"], v["conv1"] = F.conv2d_forward(x, p["conv1.w"], p["conv1.b"])
    # relu and max-pool commute exactly; the fused kernel pools first (see relu_max_pool2d)
    v["p1"], v["pool1"] = F.relu_max_pool2d(v["c1"], 2)
    v["c2"], v["conv2"] = F.conv2d_forward(v["p1"], p["conv2.w"], p["conv2.b"])
    v["p2"], v["pool2"] = F.relu_max_pool2d(v["c2"], 2)
    v["f"] = F.flatten(v["p2"])
    v["h"] = F.linear(v["f"], p["fc1.w"], p["fc1.b"])
    v["a3"] = F.relu(v["h"])
    v["z"] = F.linear(v["a3"], p["fc2.w"], p["fc2.b"])
    loss, v["dz"] = F.softmax_cross_entropy(v["z"], labels)
    g = {}
    v["da3"], g["fc2.w"], g["fc2.b"] = F.linear_backward(v["dz"], v["a3"], p["fc2.w"])
    v["dh"] = F.relu_backward(v["da3"], v["h"])
    v["df"], g["fc1.w"], g["fc1.b"] = F.linear_backward(v["dh"], v["f"], p["fc1.w"])
    v["dp2"] = F.flatten_backward(v["df"], v["p2"].shape)
    v["dc2"] = F.max_pool2d_backward(v["dp2"], v["pool2"])
    v["dp1"], g["conv2.w"], g["conv2.b"] = F.conv2d_backward_from_cache(v["dc2"], v["conv2"])
    v["dc1"] = F.max_pool2d_backward(v["dp1"], v["pool1"])
    _, g["conv1.w"], g["conv1.b"] = F.conv2d_backward_from_cache(v["dc1"], v["conv1"], need_dx=False)
    return loss, g


def numpy_step(p, x, labels):
    loss, g = lenet_forward_backward(p, x, labels)
    for name, grad in g.items():
        p[name] -= LR * grad
    return loss


def kernel_breakdown(p, x, labels, repeats):
    """Median time of each kernel call of one float32 step, in the order of the step."""
    v = {}
    lenet_forward_backward(p, x, labels, keep=v)
    c1, p1, pool1, c2, p2, pool2 = (v[k] for k in ("c1", "p1", "pool1", "c2", "p2", "pool2"))
    conv1, conv2 = v["conv1"], v["conv2"]
    f, h, a3, z, dz, da3, dh = (v[k] for k in ("f", "h", "a3", "z", "dz", "da3", "dh"))
    dp2, dc2, dp1, dc1 = (v[k] for k in ("dp2", "dc2", "dp1", "dc1"))
    calls = {
        "conv1 forward": lambda: F.conv2d_forward(x, p["conv1.w"], p["conv1.b"]),
        "relu+pool1 fwd+bwd": lambda: (F.relu_max_pool2d(c1, 2), F.max_pool2d_backward(dp1, pool1)),
        "conv2 forward": lambda: F.conv2d_forward(p1, p["conv2.w"], p["conv2.b"]),
        "relu+pool2 fwd+bwd": lambda: (F.relu_max_pool2d(c2, 2), F.max_pool2d_backward(dp2, pool2)),
        "dense fwd+bwd, loss": lambda: (
            F.linear(F.relu(F.linear(F.flatten(p2), p["fc1.w"], p["fc1.b"])), p["fc2.w"], p["fc2.b"]),
            F.softmax_cross_entropy(z, labels),
            F.linear_backward(dz, a3, p["fc2.w"]),
            F.relu_backward(da3, h),
            F.linear_backward(dh, f, p["fc1.w"]),
        ),
        "conv2 backward (dx, dw, db)": lambda: F.conv2d_backward_from_cache(dc2, conv2),
        "conv1 backward (dw, db)": lambda: F.conv2d_backward_from_cache(dc1, conv1, need_dx=False),
    }
    return {name: t.median for name, t in timed_in_turns(calls, repeats).items()}


# ----------------------------------------------------------------------------------------
# The same network in PyTorch
# ----------------------------------------------------------------------------------------


def torch_loss(torch, tp, xt, yt):
    tf = torch.nn.functional
    a = tf.max_pool2d(tf.relu(tf.conv2d(xt, tp["conv1.w"], tp["conv1.b"])), 2)
    a = tf.max_pool2d(tf.relu(tf.conv2d(a, tp["conv2.w"], tp["conv2.b"])), 2)
    a = tf.relu(tf.linear(a.flatten(1), tp["fc1.w"], tp["fc1.b"]))
    return tf.cross_entropy(tf.linear(a, tp["fc2.w"], tp["fc2.b"]), yt)


def torch_leaves(torch, params):
    return {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}


def torch_step_factory(torch, params, x, labels):
    tp = torch_leaves(torch, params)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    opt = torch.optim.SGD(list(tp.values()), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch_loss(torch, tp, xt, yt)
        loss.backward()
        opt.step()
        return loss

    return step


def gradient_agreement(torch, x, labels) -> float:
    """Largest normwise relative difference of our float64 LeNet5 gradients from torch autograd."""
    params = lenet_params(np.float64)
    _, g = lenet_forward_backward(params, x, labels)
    tp = torch_leaves(torch, params)
    torch_loss(torch, tp, torch.from_numpy(x), torch.from_numpy(labels)).backward()
    return max(float(np.linalg.norm(g[k] - tp[k].grad.numpy()) / np.linalg.norm(tp[k].grad.numpy())) for k in g)


# ----------------------------------------------------------------------------------------
# conv GFLOP/s against GEMM GFLOP/s
# ----------------------------------------------------------------------------------------

CONV_SHAPES = {
    "conv1 (128,1,28,28) * (20,1,5,5)": ((BATCH, 1, 28, 28), (20, 1, 5, 5)),
    "conv2 (128,20,12,12) * (50,20,5,5)": ((BATCH, 20, 12, 12), (50, 20, 5, 5)),
}


def conv_vs_gemm(dtype, repeats, torch=None):
    """GFLOP/s of conv2d forward + backward (dx, dw, db), with three references timed in turns:
    a square np.matmul doing as many flops as one conv pass (the target's denominator), the
    three GEMMs of our im2col scheme alone on ready buffers (what is left once the copies are
    gone), and torch's conv2d forward + autograd backward (if torch is given)."""
    rng = np.random.default_rng(1)
    rows = []
    for name, (xs, ws) in CONV_SHAPES.items():
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        y = F.conv2d(x, w, b)
        dy = rng.standard_normal(y.shape).astype(dtype)

        def conv_pass(x=x, w=w, b=b, dy=dy):
            return F.conv2d_backward_from_cache(dy, F.conv2d_forward(x, w, b)[1])

        # one pass = C_out x (C_in kh kw) x (N H_out W_out) multiply-adds; fwd + dw + dx = 3 passes
        k, p = int(np.prod(ws[1:])), y.shape[0] * y.shape[2] * y.shape[3]
        pass_flops = 2.0 * ws[0] * k * p
        n = int(round((pass_flops / 2) ** (1 / 3)))
        a, c = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
        w_mat, cols, dy_mat = (rng.standard_normal(s).astype(dtype) for s in ((ws[0], k), (k, p), (ws[0], p)))
        fns = {
            "conv": conv_pass,
            "square": lambda: np.matmul(a, c),
            "gemms": lambda: (w_mat @ cols, dy_mat @ cols.T, w_mat.T @ dy_mat),
        }
        if torch is not None:
            xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
            dyt = torch.from_numpy(dy)
            fns["torch"] = lambda: torch.nn.functional.conv2d(xt, wt, bt).backward(dyt)
        t = {name: v.median for name, v in timed_in_turns(fns, repeats, pause=0.1).items()}
        rows.append(dict(
            name=name, n=n,
            conv=3 * pass_flops / t["conv"] / 1e9,
            square=pass_flops / t["square"] / 1e9,
            gemms=3 * pass_flops / t["gemms"] / 1e9,
            torch=3 * pass_flops / t["torch"] / 1e9 if torch is not None else float("nan"),
        ))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS and torch threads")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21
    malloc_raised = raise_malloc_thresholds()

    try:
        import torch
    except ImportError:
        torch = None
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=args.threads)
        thread_note = f"{args.threads} (numpy BLAS via threadpoolctl, torch.set_num_threads)"
    except ImportError:
        limiter = nullcontext()
        thread_note = "library defaults (threadpoolctl not installed)"
    if torch is not None:
        torch.set_num_threads(args.threads)

    with limiter:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
              f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else "") + f"; threads: {thread_note}")
        print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on the cores distort every number)")
        print(MALLOC_NOTE.format(malloc_raised))
        rng = np.random.default_rng(0)
        x64 = rng.standard_normal((BATCH, 1, 28, 28))
        labels = rng.integers(0, 10, size=BATCH)

        print(f"\n(a) LeNet5 training step, batch {BATCH} (median of {repeats}, implementations timed in turns)")
        steps = {}
        for dtype in (np.float32, np.float64):
            params, x = lenet_params(dtype), x64.astype(dtype)
            steps[f"tucker_ref {np.dtype(dtype).name}"] = partial(numpy_step, params, x, labels)
        if torch is not None:
            steps["torch float32"] = torch_step_factory(torch, lenet_params(np.float32), x64.astype(np.float32), labels)
        timings = timed_in_turns(steps, repeats, pause=0.1)
        for name, t in timings.items():
            print(f"  {name:20s} {BATCH / t.median:7.0f} samples/s  ({t.median * 1e3:6.1f} ms/step; "
                  f"best round {BATCH / t.best:6.0f} samples/s)")
        if torch is not None:
            ours, theirs = timings["tucker_ref float32"], timings["torch float32"]
            print(f"  ratio tucker_ref/torch (float32): {theirs.median / ours.median:.2f} on medians, "
                  f"{theirs.best / ours.best:.2f} on best rounds  (target >= 0.8)")
            print(f"  float64 gradients vs torch autograd: max normwise rel. diff "
                  f"{gradient_agreement(torch, x64, labels):.1e}")
        params, x = lenet_params(np.float32), x64.astype(np.float32)
        breakdown = kernel_breakdown(params, x, labels, repeats)
        total = sum(breakdown.values())
        print(f"  where the float32 step goes (kernels timed separately, sum {total * 1e3:.1f} ms):")
        for name, t in breakdown.items():
            print(f"    {name:30s} {t * 1e3:6.2f} ms  {100 * t / total:4.0f}%")

        print("\n(b) conv2d forward + backward (dx, dw, db), GFLOP/s (3 passes of 2 C_out C_in kh kw N H_out W_out flops)")
        print("    vs a square np.matmul of one pass's flops; 'own GEMMs' = our three matmuls alone, no copies")
        for dtype in (np.float32, np.float64):
            for r in conv_vs_gemm(dtype, repeats, torch):
                print(f"  {np.dtype(dtype).name} {r['name']}: conv {r['conv']:6.1f}; square GEMM n={r['n']} "
                      f"{r['square']:6.1f}; ratio {r['conv'] / r['square']:.2f} (target >= 0.40); "
                      f"own GEMMs {r['gemms']:6.1f}; torch conv {r['torch']:6.1f}")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
