"""Soak test of run directories: SIGKILL training runs at random moments, resume, compare bit for bit.

    python validation/soak_runs.py --out DIR [--minutes M] [--chains N] [--seed S] [--quick]

Every chain takes one configuration (:data:`CONFIGS`: tdlrt, the TDLRT cycle with AdamW and a
cosine schedule, full, naive-tucker, fixed-rank, riemannian; some with plots) of a 9-step run
(3 epochs of 3 mini-batches of 64 images, 64 test images) and runs it through the command line
in a child process, with one BLAS thread:

1. the reference: once per configuration, uninterrupted;
2. the chain: a fresh directory; 1 to :data:`MAX_KILLS` times a child is started (``--resume``
   when the directory holds a checkpoint, a fresh run otherwise: a run killed before its first
   checkpoint has nothing to resume and its directory is taken over) and killed with SIGKILL at
   a random moment: either once it has logged a random number of steps plus a random delay of
   up to 50 ms (inside a step, a log append, an evaluation, a checkpoint or summary write, a
   plot), or at a random time since its start (also inside the start: imports, data, lock);
3. a last child runs the chain to its end.

The chain passes when its end equals the reference bit for bit: every array of the final
checkpoint (parameters, optimizer state), the RNG state and step, ``steps.jsonl`` and
``metrics.jsonl`` without their wall-clock fields, ``summary.json``'s ``final``, ``ranks`` and
the set of its null fields; and the directory holds no temporary file and exactly one
checkpoint array file. Each kill is classified by what the directory showed right after it:
before the child logged a step (start-up: imports, data, lock, the resume's checks), before the
run's first checkpoint or after one, and whether a temporary file of an atomic write was left
(the kill landed inside a write).

Writes ``DIR/soak.json`` (settings, counts, per-chain records) and prints the counts.
``--quick``: 3 chains (a smoke run, ~15 s).
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import write_json

from tucker_ref.training import checkpoint as ckpt
from tucker_ref.training.runfiles import read_jsonl

#: The run of every chain: 3 epochs of 3 mini-batches, 64 test images.
BASE_ARGS = ["--train-subset", "192", "--test-subset", "64", "--batch-size", "64", "--epochs", "3", "--quiet"]
STEPS = 9
#: Configurations the chains draw from (name -> extra CLI arguments).
CONFIGS = {
    "tdlrt": ["--method", "tdlrt", "--init-rank", "0.1", "--no-plots"],
    "tdlrt-cycle-adamw": ["--method", "tdlrt", "--init-rank", "0.1", "--s-steps", "2", "--optimizer", "adamw",
                          "--lr", "0.001", "--lr-schedule", "cosine", "--clip-grad-norm", "1", "--no-plots"],
    "tdlrt-plots": ["--method", "tdlrt", "--init-rank", "0.1"],
    "full": ["--method", "full", "--no-plots"],
    "naive-tucker": ["--method", "naive-tucker", "--init-rank", "0.1", "--no-plots"],
    "fixed-rank": ["--method", "fixed-rank", "--init-rank", "0.1", "--no-plots"],
    "riemannian": ["--method", "riemannian", "--init-rank", "0.1", "--no-plots"],
}
#: Most kills in one chain.
MAX_KILLS = 4
#: Keys of step and epoch records that hold wall-clock times.
TIME_KEYS = {"time_s", "timings", "epoch_time_s", "eval_time_s", "elapsed_s"}
#: Exit codes of a child that ran to its end (4: at chance level, as a 9-step run is).
FINISHED = (0, 4)
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory for the runs and soak.json")
    p.add_argument("--minutes", type=float, default=3.0, help="time budget (default 3)")
    p.add_argument("--chains", type=int, default=None, help="stop after this many chains (default: the budget)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    p.add_argument("--quick", action="store_true", help="3 chains")
    args = p.parse_args(argv)
    if args.quick:
        args.chains = 3
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def launch(out: Path, extra: list, resume: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tucker_ref", "train", "--out", str(out), *BASE_ARGS, *extra]
    if resume:
        argv.append("--resume")
    return subprocess.Popen(argv, env={**os.environ, **CHILD_ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run_to_end(out: Path, extra: list) -> float:
    """Run or resume ``out`` to its end; return the wall time (raises on a failed child)."""
    start = time.perf_counter()
    proc = launch(out, extra, ckpt.has_checkpoint(out))
    _, err = proc.communicate(timeout=600)
    if proc.returncode not in FINISHED:
        raise RuntimeError(f"{out}: exit code {proc.returncode}: {err}")
    return time.perf_counter() - start


def signature(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def kill_once(out: Path, extra: list, rng: np.random.Generator, duration: float) -> dict:
    """Start a child in ``out`` and SIGKILL it at a random moment; return what happened."""
    done = ckpt.load_checkpoint(out)[1]["step"] if ckpt.has_checkpoint(out) else 0
    steps = out / "steps.jsonl"
    by_steps = bool(rng.random() < 0.6)
    target, delay = int(rng.integers(done, STEPS)), float(rng.uniform(0.0, 0.05))
    at = float(rng.uniform(0.0, duration))
    before = signature(steps)
    proc = launch(out, extra, done > 0)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < 600:
        if by_steps:
            now = signature(steps)
            if now is not None and now != before and steps.read_bytes().count(b"\n") >= target:
                time.sleep(delay)
                break
        elif time.monotonic() - start >= at:
            break
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    wrote = signature(steps) != before
    _, err = proc.communicate()
    if not killed and proc.returncode not in FINISHED:
        raise RuntimeError(f"{out}: a child failed with exit code {proc.returncode}: {err}")
    names = [p.name for p in out.iterdir()] if out.is_dir() else []
    return {"mode": "steps" if by_steps else "time", "target_steps": target if by_steps else None,
            "after_s": None if by_steps else round(at, 3), "killed": killed, "checkpoint_before": done,
            "checkpoint_after": ckpt.load_checkpoint(out)[1]["step"] if ckpt.has_checkpoint(out) else 0,
            "wrote_a_step_before_the_kill": wrote,
            "temp_file_left": any(n.endswith(".tmp") for n in names)}


def differences(reference: Path, out: Path) -> list:
    """What differs between the end of ``out`` and ``reference`` (empty: bit-identical)."""
    found = []
    a, meta_a = ckpt.load_checkpoint(reference)
    b, meta_b = ckpt.load_checkpoint(out)
    if sorted(a) != sorted(b):
        found.append(f"array keys differ: {sorted(set(a) ^ set(b))}")
    found += [f"array {k} differs" for k in sorted(set(a) & set(b))
              if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
    if meta_a["step"] != meta_b["step"] or meta_a["epoch_rng_state"] != meta_b["epoch_rng_state"]:
        found.append("step or RNG state differs")
    for name in ("steps.jsonl", "metrics.jsonl"):
        if without_times(read_jsonl(reference / name)) != without_times(read_jsonl(out / name)):
            found.append(f"{name} differs")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (reference, out))
    for key in ("final", "ranks", "status", "steps", "epochs_completed", "warnings"):
        if sa.get(key) != sb.get(key):
            found.append(f"summary.json {key} differs")
    if {k for k, v in sa.items() if v is None} != {k for k, v in sb.items() if v is None}:
        found.append("summary.json has other null fields")
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    if leftovers:
        found.append(f"temporary files left: {leftovers}")
    npz = sorted(p.name for p in out.glob("checkpoint-*.npz"))
    if npz != [f"checkpoint-{meta_b['step']:09d}.npz"]:
        found.append(f"array files {npz}")
    return found


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    deadline = time.monotonic() + 60 * args.minutes
    references, durations, chains = {}, {}, []
    names = list(CONFIGS)
    while (args.chains is None or len(chains) < args.chains) and time.monotonic() < deadline:
        name = names[len(chains) % len(names)]
        extra = CONFIGS[name]
        if name not in references:
            references[name] = args.out / "reference" / name
            shutil.rmtree(references[name], ignore_errors=True)
            durations[name] = run_to_end(references[name], extra)
        out = args.out / "chains" / f"{len(chains):04d}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        kills = []
        for _ in range(int(rng.integers(1, MAX_KILLS + 1))):
            if ckpt.has_checkpoint(out) and ckpt.load_checkpoint(out)[1]["step"] >= STEPS:
                break
            kills.append(kill_once(out, extra, rng, durations[name]))
        run_to_end(out, extra)
        found = differences(references[name], out)
        chains.append({"chain": out.name, "config": name, "kills": kills, "identical": not found,
                       "differences": found})
        print(f"{out.name}: {sum(k['killed'] for k in kills)} kill(s), "
              + ("bit-identical" if not found else "DIFFERS: " + "; ".join(found)), flush=True)
        shutil.rmtree(out)  # keep the disk small; the record is in soak.json
    all_kills = [k for c in chains for k in c["kills"] if k["killed"]]
    counts = {
        "chains": len(chains),
        "identical": sum(c["identical"] for c in chains),
        "kills": len(all_kills),
        "kills_before_its_first_step_record": sum(not k["wrote_a_step_before_the_kill"] for k in all_kills),
        "kills_before_the_first_checkpoint": sum(k["checkpoint_after"] == 0 for k in all_kills),
        "kills_after_a_checkpoint": sum(k["checkpoint_after"] > 0 for k in all_kills),
        "kills_inside_an_atomic_write": sum(k["temp_file_left"] for k in all_kills),
        "children_that_finished_before_the_kill": sum(not k["killed"] for c in chains for k in c["kills"]),
        "chains_per_config": {n: sum(c["config"] == n for c in chains) for n in names},
    }
    write_json({"settings": {"base_args": BASE_ARGS, "configs": CONFIGS, "max_kills": MAX_KILLS, "seed": args.seed,
                             "minutes": args.minutes}, "counts": counts, "chains": chains}, args.out / "soak.json")
    print(json.dumps(counts, indent=1))
    return 0 if counts["identical"] == counts["chains"] and counts["chains"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
