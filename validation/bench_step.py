"""TDLRT training-step time against the full LeNet5 step, at the ranks a run settled at (a
benchmark, not a test).

    python validation/bench_step.py [--run DIR | --ranks conv1=4x1x5x5,conv2=10x4x5x5,fc1=53x53]
                                    [--repeats 20] [--dtype float32] [--threads 1] [--s-steps K] [--quick]

Ranks: the final ranks of a finished run (``DIR/summary.json``, e.g. ``runs/quickstart``), or
given explicitly. Both models see the same mini-batch of 128 images of the embedded subset;
one *step* is forward + backward + the method's update (``full``: heavy ball on every
parameter; ``tdlrt``: one rank-adaptive BUG step per factorized layer with τ and momentum of
the run, heavy ball on biases and fc2), exactly what the trainer does per mini-batch. Before
every timed TDLRT step the model is put back at the settled point, so every repetition starts
at those ranks. The two steps are timed in turns (median over ``--repeats``) so that a busy
phase of the machine hits both alike; the load average is printed because other processes on
the cores distort every number. glibc's malloc thresholds are raised for the whole process,
for both steps alike, as ``tucker-ref train`` does
(:func:`tucker_ref.training.runtime.raise_malloc_thresholds`; ``TUCKER_REF_KEEP_MALLOC=1``
keeps glibc's defaults).

Also printed: the split of each step into forward, backward and update, and the TDLRT update's
time per layer and substep (from ``StepReport.timings``).

``--s-steps K`` (K > 1) times the authors' cycle instead (``tucker-ref train --s-steps K``):
augment on the first batch, one S-step per batch, truncate after the K-th. The TDLRT contender
is then a whole cycle of K batches from the settled point, and its step time is the cycle's
time over K; the steps' times by position in the cycle (the opening step with the
augmentation, the S-steps between, the closing step with the truncation) are printed too.
The S-steps run at the augmented ranks (up to twice the settled ones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from bench_layers import MALLOC_NOTE, timed_in_turns

from tucker_ref.data import iterate_minibatches
from tucker_ref.nn.functional import softmax_cross_entropy
from tucker_ref.training import TrainConfig, build_model, load_data
from tucker_ref.training.config import parse_init_rank
from tucker_ref.training.methods import make_update_rule
from tucker_ref.training.runtime import raise_malloc_thresholds

BATCH = 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, help="run directory whose final ranks (and tau) to use")
    src.add_argument("--ranks", help="ranks per layer, e.g. conv1=4x1x5x5,conv2=10x4x5x5,fc1=53x53")
    p.add_argument("--tau", type=float, default=None, help="tau of the step (default: the run's, else 0.1)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per method (default 20)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (threadpoolctl); default: the library's")
    p.add_argument("--s-steps", type=int, default=1,
                   help="time the authors' cycle of K S-steps per augmentation (default 1: one tdlrt_step per batch)")
    p.add_argument("--quick", action="store_true", help="3 repeats (smoke run)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    if args.s_steps < 1:
        p.error("--s-steps must be a positive integer")
    if args.quick:
        args.repeats = 3
    return args


def settled(args) -> tuple[dict, float]:
    """``(ranks per layer, tau)`` from ``--run`` or ``--ranks`` (default: the quickstart's ranks)."""
    tau = 0.1
    if args.run is not None:
        summary = json.loads((args.run / "summary.json").read_text())
        ranks = {k: tuple(v) for k, v in summary["ranks"].items()}
        tau = summary["args"]["tau"]
    else:
        ranks = parse_init_rank(args.ranks or "conv1=4x1x5x5,conv2=10x4x5x5,fc1=53x53")
    return ranks, (tau if args.tau is None else args.tau)


class Stepper:
    """One method's model and update rule, a fixed batch, and timing of the step's parts."""

    def __init__(self, config: TrainConfig, x, y):
        self.config = config.validated()
        self.model = build_model(self.config)
        self.rule = make_update_rule(self.config)
        self.x, self.y = x, y
        self.start = {k: v.copy() for k, v in self.model.parameters().items()}
        self.weights = {n: layer.weight for n, layer in self.model.tucker_layers().items()}
        self.parts = {"forward": [], "backward": [], "update": []}
        self.substeps: dict = {}
        self.by_position: dict = {}  # position in the cycle -> whole step times

    def reset(self):
        """Back to the settled point (factorized weights by reference: steps never mutate them)."""
        for name, T in self.weights.items():
            self.model[name].weight = T
        for key, value in self.start.items():
            layer, pname = key.split(".", 1)
            if pname in ("weight", "bias") and not (layer in self.weights and pname == "weight"):
                setattr(self.model[layer], pname, value.copy())
        self.rule = make_update_rule(self.config)

    def step(self):
        self._batch(close_cycle=True, position=0)
        self.reset()

    def cycle(self):
        """The authors' cycle of ``config.s_steps`` batches from the settled point (the rule closes it)."""
        for k in range(self.config.s_steps):
            self._batch(close_cycle=False, position=k)
        self.reset()

    def _batch(self, close_cycle: bool, position: int):
        t0 = time.perf_counter()
        loss, dlogits = softmax_cross_entropy(self.model.forward(self.x), self.y)
        t1 = time.perf_counter()
        self.model.backward(dlogits, need_dx=False)
        t2 = time.perf_counter()
        reports = self.rule.step(self.model, self.config.lr, regrad=None, close_cycle=close_cycle)
        t3 = time.perf_counter()
        for part, dt in zip(self.parts, (t1 - t0, t2 - t1, t3 - t2)):
            self.parts[part].append(dt)
        self.by_position.setdefault(position, []).append(t3 - t0)
        for layer, report in reports.items():
            for sub, dt in report.get("timings", {}).items():
                self.substeps.setdefault((layer, sub), []).append(dt)


def main(argv=None) -> int:
    args = parse_args(argv)
    ranks, tau = settled(args)
    malloc_raised = raise_malloc_thresholds()
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads) if args.threads else nullcontext()
    except ImportError:
        limiter = nullcontext()
    with limiter:
        base = TrainConfig(dtype=args.dtype, quiet=True, plots=False)
        train_set, _ = load_data(base.validated())
        x, y = next(iter(iterate_minibatches(train_set, BATCH, np.random.default_rng(0))))
        full = Stepper(TrainConfig(method="full", dtype=args.dtype), x, y)
        spec = ",".join(f"{n}={'x'.join(map(str, r))}" for n, r in ranks.items())
        tdlrt = Stepper(TrainConfig(method="tdlrt", tau=tau, init_rank=spec, dtype=args.dtype, s_steps=args.s_steps),
                        x, y)

        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; numpy "
              f"{np.__version__}; BLAS threads: {args.threads or 'library default'} "
              f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print(MALLOC_NOTE.format(malloc_raised))
        print(f"settled ranks {ranks}, tau {tau}, batch {BATCH}, {args.dtype}, median of {args.repeats}"
              + (f"; the authors' cycle, {args.s_steps} S-steps per augmentation" if args.s_steps > 1 else ""))
        contenders = {"full": full.step, "tdlrt": tdlrt.step if args.s_steps == 1 else tdlrt.cycle}
        medians = {name: t.median for name, t in timed_in_turns(contenders, args.repeats).items()}
        medians["tdlrt"] /= args.s_steps
        print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    result = {"ranks": ranks, "tau": tau, "dtype": args.dtype, "repeats": args.repeats, "s_steps": args.s_steps,
              "malloc_thresholds_raised": malloc_raised,
              "full_step_ms": 1e3 * medians["full"], "tdlrt_step_ms": 1e3 * medians["tdlrt"],
              "ratio_tdlrt_over_full": medians["tdlrt"] / medians["full"],
              "parts_ms": {name: {part: 1e3 * float(np.median(v)) for part, v in s.parts.items()}
                           for name, s in (("full", full), ("tdlrt", tdlrt))},
              "tdlrt_substeps_ms": {f"{layer}.{sub}": 1e3 * float(np.median(v))
                                    for (layer, sub), v in sorted(tdlrt.substeps.items())},
              "tdlrt_step_ms_by_cycle_position": {k: 1e3 * float(np.median(v))
                                                  for k, v in sorted(tdlrt.by_position.items())}}
    print(f"full step  {result['full_step_ms']:8.1f} ms")
    print(f"tdlrt step {result['tdlrt_step_ms']:8.1f} ms   (tdlrt / full = {result['ratio_tdlrt_over_full']:.2f})")
    for name, parts in result["parts_ms"].items():
        print(f"  {name:5s}: " + ", ".join(f"{part} {ms:.1f} ms" for part, ms in parts.items()))
    per = "ms per cycle" if args.s_steps > 1 else "ms"
    print(f"  tdlrt update by layer and substep ({per}): " + ", ".join(
        f"{key} {ms:.1f}" for key, ms in result["tdlrt_substeps_ms"].items() if ms >= 0.05))
    if args.s_steps > 1:
        print("  tdlrt step by position in the cycle (ms; opening with the augmentation, closing with the "
              "truncation): " + ", ".join(f"{k + 1}: {ms:.1f}"
                                          for k, ms in result["tdlrt_step_ms_by_cycle_position"].items()))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_step.json").write_text(json.dumps(
            {**result, "ranks": {k: list(v) for k, v in ranks.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
