"""Wall time of whole training runs: TDLRT from its full-rank start against the full model (a
benchmark, not a test).

    python validation/bench_runs.py [--epochs 10] [--rounds 3] [--threads 2] [--out FILE.json]
                                    [--extra "--tau 0.1"] [--quick]

Each round runs ``tucker-ref train --method full`` and ``tucker-ref train --method tdlrt`` (the
README's main job: τ = 0.1, full-rank start) once each, in alternating order, as separate
processes with ``--quiet --no-plots`` into fresh temporary directories; the wall time of each
process is measured from outside (start-up, data loading, evaluation and the writes of the run
directory included, as a user experiences it). The medians over rounds and their ratio are
printed, with the per-epoch training times the runs report (``metrics.jsonl``), so the cost of
the first, large-rank epochs can be seen, and the load average, because other processes on the
cores distort every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("full", "tdlrt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="OPENBLAS_NUM_THREADS of the runs (default: inherited)")
    p.add_argument("--extra", default="", help="further arguments of both runs, e.g. '--seed 1'")
    p.add_argument("--quick", action="store_true", help="1 round of 1 epoch on 600 images (smoke run)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds = 1, 1
        args.extra = f"--train-subset 600 --test-subset 200 {args.extra}"
    if args.epochs < 1 or args.rounds < 1:
        p.error("--epochs and --rounds must be positive")
    return args


def run_once(method: str, args, env) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "tucker_ref", "train", "--method", method, "--epochs", str(args.epochs),
               "--quiet", "--no-plots", "--out", str(out), *shlex.split(args.extra)]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode not in (0, 4):
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
        epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "epoch_times_s": [e["epoch_time_s"] for e in epochs],
            "test_accuracy": summary["final"]["test_accuracy"], "ranks": summary.get("ranks")}


def main(argv=None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    if args.threads is not None:
        env.update(OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    load_before = os.getloadavg()[0]
    runs = {m: [] for m in METHODS}
    for r in range(args.rounds):
        for method in (METHODS if r % 2 == 0 else METHODS[::-1]):
            runs[method].append(run_once(method, args, env))
            print(f"round {r + 1} {method:5s}: {runs[method][-1]['wall_s']:.1f} s", flush=True)
    load_after = os.getloadavg()[0]
    med = {m: float(np.median([x["wall_s"] for x in runs[m]])) for m in METHODS}
    epoch_med = {m: np.median([x["epoch_times_s"] for x in runs[m]], axis=0).round(2).tolist() for m in METHODS}
    print(f"\nthreads {env.get('OPENBLAS_NUM_THREADS', 'default')}, epochs {args.epochs}, rounds {args.rounds}, "
          f"load average {load_before:.2f} -> {load_after:.2f}")
    for m in METHODS:
        print(f"{m:5s}: median wall {med[m]:.1f} s; median epoch times (s) {epoch_med[m]}; "
              f"test accuracy {[x['test_accuracy'] for x in runs[m]]}")
    ratio = med["tdlrt"] / med["full"]
    print(f"tdlrt / full wall time = {ratio:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "epochs": args.epochs, "rounds": args.rounds, "threads": env.get("OPENBLAS_NUM_THREADS"),
            "extra": args.extra, "load_average": [load_before, load_after], "median_wall_s": med,
            "median_epoch_times_s": epoch_med, "ratio_tdlrt_over_full": ratio, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
