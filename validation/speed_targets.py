"""Every benchmark behind the speed-target table of docs/performance.md, in one resumable run.

    python validation/speed_targets.py [--out docs/figures/performance] [--redo] [--only NAME ...]

Runs, one after the other (never two at once: they share the cores they measure), the
commands listed in ``RUNS`` below and writes each one's printed output to ``OUT/NAME.txt``
and its JSON next to it, as committed in ``docs/figures/performance/``. A benchmark whose
``.txt`` already exists is skipped unless ``--redo`` is given, so an interrupted run continues
where it stopped. About 10 minutes on 2 cores. Run it on a quiet machine: the scripts print
the load average, and other processes distort every number.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTLED = {"0.1": "conv1=14x1x5x5,conv2=30x20x5x5,fc1=46x46", "0.05": "conv1=17x1x5x5,conv2=50x20x5x5,fc1=177x177"}

#: name -> (script, arguments, {JSON written by the script: name it gets in OUT}); "{tmp}" is a
#: scratch directory, "{out}" the output directory.
RUNS = {
    "bench_layers_2": ("bench_layers.py", ["--threads", "2"], {}),
    "bench_layers_1": ("bench_layers.py", ["--threads", "1"], {}),
    **{f"bench_step_tau{tau}_{t}": ("bench_step.py", ["--ranks", ranks, "--tau", tau, "--threads", t, "--out", "{tmp}"],
                                     {"bench_step.json": f"bench_step_tau{tau}_{t}{'threads' if t == '2' else 'thread'}.json"})
       for tau, ranks in SETTLED.items() for t in ("2", "1")},
    **{f"bench_step_tau0.1_s10_{t}": ("bench_step.py", ["--ranks", SETTLED["0.1"], "--tau", "0.1", "--threads", t,
                                                        "--s-steps", "10", "--repeats", "10", "--out", "{tmp}"],
                                      {"bench_step.json": f"bench_step_tau0.1_s10_{t}{'threads' if t == '2' else 'thread'}.json"})
       for t in ("2", "1")},
    "bench_runs_2": ("bench_runs.py", ["--threads", "2", "--rounds", "3", "--out", "{tmp}/runs.json"],
                     {"runs.json": "bench_runs_2threads.json"}),
    "bench_runs_1": ("bench_runs.py", ["--threads", "1", "--rounds", "3", "--out", "{tmp}/runs.json"],
                     {"runs.json": "bench_runs_1thread.json"}),
    "bench_layers_2a": ("bench_layers.py", ["--threads", "2"], {}),
    "bench_scaling_2": ("bench_scaling.py", ["--threads", "2", "--out", "{tmp}"],
                        {"bench_scaling.json": "bench_scaling.json", "bench_scaling.png": "bench_scaling.png"}),
    "bench_scaling_1": ("bench_scaling.py", ["--threads", "1", "--out", "{tmp}"],
                        {"bench_scaling.json": "threads1/bench_scaling.json", "bench_scaling.png": "threads1/bench_scaling.png"}),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "figures" / "performance")
    p.add_argument("--redo", action="store_true", help="rerun benchmarks whose output already exists")
    p.add_argument("--only", nargs="+", choices=sorted(RUNS), help="run only these")
    args = p.parse_args(argv)
    for name, (script, arguments, products) in RUNS.items():
        text = args.out / f"{name}.txt"
        if (args.only and name not in args.only) or (text.exists() and not args.redo):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(HERE / script), *(a.format(tmp=tmp, out=args.out) for a in arguments)]
            print(f"{name}: {' '.join(cmd[1:])}", flush=True)
            done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                return done.returncode
            for made, kept in products.items():
                (args.out / kept).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / made, args.out / kept)
            # the printed output last: its presence marks the benchmark as done
            args.out.mkdir(parents=True, exist_ok=True)
            text.write_text(done.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
