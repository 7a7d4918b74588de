"""How one Tucker conv layer's cost grows with its width, against the dense conv (a benchmark,
not a test).

    python validation/bench_scaling.py [--out DIR] [--threads 2]
                                       [--repeats 15] [--dtype float32] [--quick] [--seed 0]

One conv layer with ``C_in = C_out = C`` for ``C`` in {32, 64, 128, 256}, 3×3 kernel, padding 1,
batch 32, 16×16 inputs. Three parts of a training step are timed for each layer:

* **dense**: forward ``conv2d(x, w, b)``; backward ``conv2d_backward(dy, x, w)`` (dx, dw, db);
  update: one SGD step ``w -= λ dw``, ``b -= λ db``.
* **Tucker** at channel ranks ``r = ⌈f C⌉`` for ``f`` = 10% and 25% (spatial ranks 3, i.e. full):
  forward and backward of the :class:`tucker_ref.nn.TuckerConv2d` module (the training path:
  the forward keeps its intermediates, the backward computes ``dx`` and leaves the factor
  gradients to the oracle); update: one ``tdlrt_step`` (τ = 0.1, plain SGD, no diagnostics)
  with the layer's :class:`tucker_ref.nn.TuckerConvGradient`, i.e. the gradient projections
  the step asks for are part of the update, as in training. Each update starts from the
  same point.

All callables of one width are timed in turns (round r runs each once after an untimed call,
:func:`bench_layers.timed_in_turns`) and the median is kept, so a busy phase of a shared
machine hits them alike. Printed and written (``bench_scaling.json`` and
``bench_scaling.png`` in ``--out``):

* every median time and the ratio Tucker / dense per part and for the whole step;
* the **crossover width**: where the ratio falls through 1, interpolated linearly in
  ``(log C, log ratio)`` between the two measured widths around it (``"below"`` when the
  Tucker part is already cheaper at the smallest width, ``None`` when it never is);
* the **growth exponent** of each series: the least-squares slope of ``log time`` against
  ``log C`` (the dense conv's flops grow like ``C²``, and so do the Tucker layer's at ranks
  proportional to ``C``; the exponents say how far the measured times follow).

glibc's malloc thresholds are raised for the whole process, for the dense and the Tucker
layers alike (:func:`tucker_ref.training.runtime.raise_malloc_thresholds`, as ``tucker-ref
train`` does; ``TUCKER_REF_KEEP_MALLOC=1`` keeps glibc's defaults).

Inputs come from ``np.random.default_rng(seed)``; the times, of course, vary from run to run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from bench_layers import MALLOC_NOTE, timed_in_turns
from common import loglog_slope, new_figure, save_figure, write_json

from tucker_ref import TuckerTensor
from tucker_ref.integrators import tdlrt_step
from tucker_ref.nn import TuckerConv2d, conv2d, conv2d_backward
from tucker_ref.training.runtime import raise_malloc_thresholds
from tucker_ref.truncation import rank_from_fraction
from tucker_ref.tucker import random_orthonormal

WIDTHS = (32, 64, 128, 256)
QUICK_WIDTHS = (8, 16)
FRACTIONS = (0.10, 0.25)
BATCH, SIZE, KERNEL, PADDING = 32, 16, 3, 1
LR, TAU = 0.01, 0.1
PARTS = ("forward", "backward", "update")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "performance"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help="directory for bench_scaling.json/.png (default: docs/figures/performance, for "
                        "--quick a new temporary directory, so a smoke run never replaces the committed figure)")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (threadpoolctl); default: the library's")
    p.add_argument("--repeats", type=int, default=15, help="rounds per width (default 15)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--quick", action="store_true", help=f"widths {QUICK_WIDTHS}, 3 rounds (a smoke run)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.quick:
        args.repeats = 3
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench_scaling_")) if args.quick else DEFAULT_OUT
    return args


def dense_parts(x, dy, w, b) -> dict:
    """Forward, backward and SGD update of the dense conv (the update writes into copies)."""
    grads = conv2d_backward(dy, x, w, padding=PADDING)
    w_new, b_new = w.copy(), b.copy()

    def update():
        np.subtract(w, LR * grads[1], out=w_new)
        np.subtract(b, LR * grads[2], out=b_new)

    return {
        "forward": lambda: conv2d(x, w, b, padding=PADDING),
        "backward": lambda: conv2d_backward(dy, x, w, padding=PADDING),
        "update": update,
    }


def tucker_parts(x, dy, T, b) -> dict:
    """Forward and backward of the module (``dx``; it keeps what the oracle needs) and one
    ``tdlrt_step`` with the layer's gradient oracle, always from the same point ``T``."""
    layer = TuckerConv2d(T, b.copy(), padding=PADDING)
    layer.forward(x)
    layer.backward(dy)
    return {
        "forward": lambda: layer.forward(x),
        "backward": lambda: layer.backward(dy),
        # a new oracle per step (the trainer's too): an oracle keeps the products it computed
        "update": lambda: tdlrt_step(T, layer.gradient_oracle(), LR, tau=TAU, diagnostics=False),
    }


def layer_problem(rng, c: int, dtype) -> dict:
    """Input, output gradient, dense kernel and bias, and the Tucker points of one width."""
    x = rng.standard_normal((BATCH, c, SIZE, SIZE)).astype(dtype)
    dy = rng.standard_normal((BATCH, c, SIZE, SIZE)).astype(dtype)
    w = (rng.standard_normal((c, c, KERNEL, KERNEL)) / math.sqrt(9 * c)).astype(dtype)
    b = (0.1 * rng.standard_normal(c)).astype(dtype)
    points = {}
    for f in FRACTIONS:
        r = rank_from_fraction(f, c)
        ranks = (r, r, KERNEL, KERNEL)
        core = rng.standard_normal(ranks) / math.sqrt(9 * c)
        factors = [random_orthonormal(rng, n, k) for n, k in zip(w.shape, ranks)]
        points[f] = TuckerTensor(core.astype(dtype), [U.astype(dtype) for U in factors])
    return {"x": x, "dy": dy, "w": w, "b": b, "points": points}


def series_name(f) -> str:
    return "dense" if f is None else f"tucker {round(100 * f)}%"


def measure(widths, repeats: int, dtype, seed: int) -> dict:
    """``times[series][part]`` = list of median seconds over ``widths`` (parts and ``step``, their sum)."""
    rng = np.random.default_rng(seed)
    times = {series_name(f): {part: [] for part in (*PARTS, "step")} for f in (None, *FRACTIONS)}
    ranks = {series_name(f): [] for f in FRACTIONS}
    for c in widths:
        prob = layer_problem(rng, c, dtype)
        fns = {("dense", part): fn for part, fn in dense_parts(prob["x"], prob["dy"], prob["w"], prob["b"]).items()}
        for f, T in prob["points"].items():
            ranks[series_name(f)].append(list(T.ranks))
            fns.update({(series_name(f), part): fn for part, fn in
                        tucker_parts(prob["x"], prob["dy"], T, prob["b"]).items()})
        medians = {key: t.median for key, t in timed_in_turns(fns, repeats).items()}
        for (series, part), t in medians.items():
            times[series][part].append(t)
        for series in times:
            times[series]["step"].append(sum(medians[(series, part)] for part in PARTS))
        print(f"  C = {c:4d}: " + "; ".join(
            f"{series} " + "/".join(f"{1e3 * times[series][part][-1]:.2f}" for part in (*PARTS, "step"))
            for series in times) + "  (ms: forward/backward/update/step)")
    return {"times": times, "ranks": ranks}


def crossover(widths, ratios):
    """Width where ``ratio`` (Tucker / dense) falls through 1, interpolated in (log C, log ratio)."""
    if ratios[0] < 1:
        return "below"
    for (c0, q0), (c1, q1) in zip(zip(widths, ratios), zip(widths[1:], ratios[1:])):
        if q0 >= 1 > q1:
            t = math.log(q0) / (math.log(q0) - math.log(q1))
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return None


def summarize(widths, times) -> dict:
    """Ratios Tucker / dense, crossover widths and growth exponents of every series and part."""
    dense = times["dense"]
    summary = {"ratio": {}, "crossover_width": {}, "growth_exponent": {}}
    for series, parts in times.items():
        summary["growth_exponent"][series] = {part: loglog_slope(widths, t)[0] for part, t in parts.items()}
        if series == "dense":
            continue
        summary["ratio"][series] = {part: [a / d for a, d in zip(t, dense[part])] for part, t in parts.items()}
        summary["crossover_width"][series] = {part: crossover(widths, q)
                                              for part, q in summary["ratio"][series].items()}
    return summary


def plot(widths, times, summary, out: Path, title: str) -> Path:
    fig, axes = new_figure(ncols=2, nrows=2, size=(4.6, 3.6))
    for ax, part in zip(axes, (*PARTS, "step")):
        for series, parts in times.items():
            p = summary["growth_exponent"][series][part]
            ax.loglog(widths, 1e3 * np.asarray(parts[part]), "o-", label=f"{series} (slope {p:.2f})")
        ax.set_xticks(widths, [str(c) for c in widths])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("channels C = C_in = C_out")
        ax.set_title(part if part != "step" else "whole step (sum)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median time (ms)")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, out, "bench_scaling")


def main(argv=None) -> dict:
    args = parse_args(argv)
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    malloc_raised = raise_malloc_thresholds()
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads) if args.threads else nullcontext()
    except ImportError:
        limiter = nullcontext()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; numpy "
          f"{np.__version__}; BLAS threads: {args.threads or 'library default'}")
    print(MALLOC_NOTE.format(malloc_raised))
    print(f"one conv layer, C_in = C_out = C, {KERNEL}x{KERNEL}, padding {PADDING}, batch {BATCH}, "
          f"{SIZE}x{SIZE} inputs, {args.dtype}; channel ranks {', '.join(f'{f:.0%}' for f in FRACTIONS)} of C; "
          f"median of {args.repeats} rounds in turns")
    load_before = os.getloadavg()[0]
    with limiter:
        measured = measure(widths, args.repeats, np.dtype(args.dtype), args.seed)
    load_after = os.getloadavg()[0]
    times = measured["times"]
    summary = summarize(widths, times)

    print(f"load average {load_before:.2f} before, {load_after:.2f} after (other processes distort every number)")
    print("\nratio Tucker / dense (forward, backward, update, step) per width " + str(list(widths)))
    for series, parts in summary["ratio"].items():
        for part, q in parts.items():
            cross = summary["crossover_width"][series][part]
            cross = f"{cross:.0f}" if isinstance(cross, float) else cross
            print(f"  {series:10s} {part:8s} " + " ".join(f"{v:6.2f}" for v in q) + f"   crossover C: {cross}")
    print("growth exponent (slope of log time vs log C):")
    for series, parts in summary["growth_exponent"].items():
        print(f"  {series:10s} " + ", ".join(f"{part} {p:.2f}" for part, p in parts.items()))

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {"widths": list(widths), "fractions": list(FRACTIONS), "batch": BATCH, "size": SIZE,
                   "kernel": KERNEL, "padding": PADDING, "lr": LR, "tau": TAU, "dtype": args.dtype,
                   "threads": args.threads, "repeats": args.repeats, "seed": args.seed, "quick": args.quick},
        "machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "numpy": np.__version__, "load_before": load_before, "load_after": load_after,
                    "malloc_thresholds_raised": malloc_raised},
        "ranks": measured["ranks"],
        "times_ms": {s: {part: [1e3 * t for t in ts] for part, ts in parts.items()} for s, parts in times.items()},
        **summary,
    }
    write_json(result, args.out / "bench_scaling.json")
    plot(widths, times, summary, args.out,
         f"Tucker conv layer vs dense, {args.dtype}, {args.threads or 'default'} BLAS threads, "
         f"median of {args.repeats}")
    print(f"wrote {args.out / 'bench_scaling.json'} and {args.out / 'bench_scaling.png'}")
    return result


if __name__ == "__main__":
    main()
