"""Fingerprint of short training runs: the check that a refactoring or a reordering that should
not matter leaves every result bit for bit as it was (a tool, not a test).

    python validation/fingerprint.py [--out FILE] [--compare FILE] [--threads 1]

Runs nine short trainings (2 epochs on 600 training and 200 test images of the embedded subset,
batch 64, seed 3) as separate ``tucker-ref train`` processes, one for each method and the TDLRT
variants: ``tdlrt`` (τ 0.1), its augmented-gradient variant in float64, the authors' cycle
(3 S-steps, AdamW, cosine schedule, clipping, rank caps), ``full`` with momentum,
``naive-tucker``, ``fixed-rank``, ``fixed-rank-layerwise``, ``riemannian`` and a ``tdlrt`` run
with ``--check-descent --validation 100``. For each it prints two SHA-256 prefixes: of the arrays
of the final checkpoint (parameters and optimizer state, by key), and of the per-step and
per-epoch records with every timing field removed; and the final ranks.

Bit-identity holds only at the same BLAS thread count on the same machine and libraries
(OpenBLAS sums in another order with another thread count), so run it before and after a
change on one machine (``--out before.txt`` at the old commit, ``--compare before.txt`` at the
new one). Exit code 1 when ``--compare`` finds a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

COMMON = ["--epochs", "2", "--train-subset", "600", "--test-subset", "200", "--batch-size", "64", "--quiet",
          "--no-plots", "--seed", "3"]
RUNS = {
    "descent": ["--method", "tdlrt", "--tau", "0.05", "--check-descent", "--validation", "100"],
    "fixed": ["--method", "fixed-rank"],
    "fixedl": ["--method", "fixed-rank-layerwise"],
    "full": ["--method", "full", "--optimizer", "momentum"],
    "naive": ["--method", "naive-tucker"],
    "riem": ["--method", "riemannian", "--tau", "0.1"],
    "tdlrt": ["--method", "tdlrt", "--tau", "0.1"],
    "tdlrt_cycle": ["--method", "tdlrt", "--tau", "0.2", "--s-steps", "3", "--optimizer", "adamw", "--weight-decay",
                    "0", "--lr-schedule", "cosine", "--clip-grad-norm", "1", "--rmax-fraction", "0.5", "--rmin", "3",
                    "--lr", "0.01"],
    "tdlrt_grad": ["--method", "tdlrt", "--tau", "0.1", "--variant", "gradient", "--dtype", "float64"],
}


def without_timings(record):
    """``record`` without the fields that measure time (they differ on every run)."""
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items()
                if "tim" not in k and not k.endswith("_s") and k != "seconds"}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


def fingerprint(run_dir: Path) -> str:
    arrays = hashlib.sha256()
    checkpoints = sorted(run_dir.glob("checkpoint-*.npz"))
    if checkpoints:
        with np.load(checkpoints[-1]) as z:
            for key in sorted(z.files):
                arrays.update(key.encode())
                arrays.update(np.ascontiguousarray(z[key]).tobytes())
    records = ""
    for name in ("steps.jsonl", "metrics.jsonl"):
        path = run_dir / name
        if path.exists():
            lines = path.read_text().splitlines()
            records += json.dumps([without_timings(json.loads(line)) for line in lines], sort_keys=True)
    summary_path = run_dir / "summary.json"
    ranks = json.loads(summary_path.read_text()).get("ranks") if summary_path.exists() else None
    return (f"{arrays.hexdigest()[:16]} {hashlib.sha256(records.encode()).hexdigest()[:16]} "
            f"{json.dumps(ranks, sort_keys=True)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the fingerprint to this file")
    p.add_argument("--compare", type=Path, help="compare with a fingerprint written by --out")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the runs (default 1)")
    args = p.parse_args(argv)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in RUNS.items():
            out = Path(tmp) / name
            done = subprocess.run([sys.executable, "-m", "tucker_ref", "train", *COMMON, "--out", str(out), *flags],
                                  env=env, capture_output=True, text=True)
            status = "" if done.returncode in (0, 4) else f" (exit {done.returncode})"
            lines.append(f"{name} {fingerprint(out)}{status}")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    if args.compare:
        before = args.compare.read_text().splitlines()
        changed = [f"  {a}\n  {b}" for a, b in zip(before, lines) if a != b]
        if changed or len(before) != len(lines):
            print(f"differs from {args.compare}:\n" + "\n".join(changed))
            return 1
        print(f"identical to {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
