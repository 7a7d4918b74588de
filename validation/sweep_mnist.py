"""τ sweep of TDLRT on the embedded MNIST subset, with the full and naive-Tucker baselines.

    python validation/sweep_mnist.py --out DIR [--epochs E] [--taus 0.05 0.1 0.2 0.3]
                                     [--seeds 0 1 2] [--init-rank 1.0] [--naive-lrs 0.05 0.01]
                                     [--jobs 2] [--quick]

For every seed: one ``full`` run (dense LeNet5), one ``tdlrt`` run per τ, and for every τ one
``naive-tucker`` run at the ranks that the TDLRT run of the same seed and τ ended with (so
the two are compared at equal compression; only the training method differs), at the trainer's
lr and at every lr of ``--naive-lrs``. Each run is
``tucker_ref.training.train`` with the trainer's defaults (lr 0.05, momentum 0.9, batch 128,
4000/1000 split of the embedded subset) in its own directory ``DIR/runs/<name>``; a run
whose ``summary.json`` says ``completed`` is not repeated, an interrupted one is resumed, so
the sweep can be restarted.

Writes into ``DIR``:

* ``results.csv`` / ``results.json`` — one row per (method, τ): number of seeds, mean ± std of
  the final test accuracy, of the conv-layer and whole-network compression (spec §5; weights
  only) and of the training time per epoch, and the final ranks of every seed;
* ``runs.csv`` — one row per run;
* ``results.md`` — the table in Markdown (for docs/results.md);
* ``accuracy_vs_compression.png`` — accuracy against conv compression, mean ± std over seeds;
* ``curves.png`` / ``curves_naive.png`` — loss and test accuracy against steps, first seed: full
  and TDLRT / full and naive Tucker.

Threads: each run uses one BLAS thread (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` default to 1 here, before NumPy is imported, unless set) and ``--jobs``
runs go in parallel; on a shared 2-core machine one thread per process was 5-20× faster than
two (BLAS threads spin when the cores are busy).

``--quick`` is a smoke run (2 τ values, 1 seed, initial rank 0.2, 2 epochs of 4 steps on 512 images):
seconds, not a result.
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import argparse
import concurrent.futures
import io
import json
import os
from pathlib import Path

import numpy as np
from common import print_table, write_csv, write_json

from tucker_ref.training import TrainConfig, train
from tucker_ref.training.plots import plot_accuracy_vs_compression, plot_curves
from tucker_ref.training.runfiles import read_jsonl


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    p.add_argument("--taus", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3], help="τ values of TDLRT")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--init-rank", default="1.0",
                   help="initial ranks of TDLRT (fraction, integer or per-layer spec; default 1.0 = full rank, so "
                        "that τ alone decides the ranks; smaller values start cheaper and lower)")
    p.add_argument("--naive-lrs", type=float, nargs="+", default=None,
                   help="learning rates of the naive-Tucker runs (default: the trainer's lr, the same as TDLRT's); "
                        "naive factor training is less stable, so a smaller lr gives it a fair chance")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 taus, 1 seed, init rank 0.2, 2 epochs on 512 images")
    args = p.parse_args(argv)
    if args.quick:
        args.taus, args.seeds, args.epochs, args.init_rank = args.taus[:2], args.seeds[:1], 2, "0.2"
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def tau_label(tau: float) -> str:
    return f"{tau:g}"


def run_one(name: str, out: Path, settings: dict) -> dict:
    """Train (or resume, or reuse) one configuration; return its summary."""
    run_dir = out / "runs" / name
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary["status"] == "completed" and summary["args"]["epochs"] == settings["epochs"]:
            return summary
    resume = (run_dir / "checkpoint.json").is_file()
    config = TrainConfig(out=str(run_dir), quiet=True, resume=resume, **settings)
    try:
        return train(config, stream=io.StringIO())
    except Exception as exc:  # a diverged or failed run is a result of the sweep, not its end
        return {"status": "failed", "message": f"{type(exc).__name__}: {exc}", "out": str(run_dir),
                "method": settings["method"], "args": settings}


def ranks_spec(ranks: dict) -> str:
    """``--init-rank`` spec reproducing ``ranks`` exactly (``conv1=4x1x5x5,...``)."""
    return ",".join(f"{layer}={'x'.join(str(r) for r in shape)}" for layer, shape in ranks.items())


def job(method: str, seed: int, tau, settings: dict, lr=None) -> dict:
    """One run; ``lr`` (``None``: the trainer's default) goes into the name only when given."""
    name = method + ("" if lr is None else f"-lr{lr:g}") + ("" if tau is None else f"-tau{tau:g}") + f"-seed{seed}"
    return {"name": name, "method": method, "tau": tau, "seed": seed, "lr": lr,
            "settings": {**settings, "method": method, "seed": seed, **({} if lr is None else {"lr": lr})}}


def run_all(args, jobs: list) -> dict:
    """Run the jobs with ``args.jobs`` processes; ``{name: summary}``."""
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {j["name"]: pool.submit(run_one, j["name"], args.out, j["settings"]) for j in jobs}
        results = {}
        for name, future in futures.items():
            results[name] = s = future.result()
            acc = (s.get("final") or {}).get("test_accuracy")
            print(f"  {name}: {s['status']}" + (f", test accuracy {100 * acc:.2f}%" if acc is not None else "")
                  + (f" ({s['message']})" if s.get("message") else ""), flush=True)
    return results


def summarize(rows: list) -> dict:
    """Mean and (sample, ddof=1) std of a group of runs, ``None`` where nothing completed."""
    done = [r for r in rows if r["status"] == "completed"]

    def stats(key):
        values = np.array([r[key] for r in done if r[key] is not None], dtype=float)
        if values.size == 0:
            return None, None
        return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0

    out = {"runs": len(rows), "completed": len(done)}
    for key in ("accuracy", "conv_compression", "network_compression", "time_per_epoch_s"):
        out[f"{key}_mean"], out[f"{key}_std"] = stats(key)
    out["ranks"] = [r["ranks"] for r in done]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    base = {"epochs": args.epochs, "plots": False}
    if args.quick:
        base.update(train_subset=512, test_subset=256)
    print(f"sweep: taus {args.taus}, seeds {args.seeds}, {args.epochs} epochs, TDLRT init rank {args.init_rank}, "
          f"{args.jobs} jobs, BLAS threads per job {os.environ['OPENBLAS_NUM_THREADS']}", flush=True)

    first = [job("full", s, None, base) for s in args.seeds]
    first += [job("tdlrt", s, t, {**base, "tau": t, "init_rank": args.init_rank})
              for t in args.taus for s in args.seeds]
    print("phase 1: full and TDLRT runs", flush=True)
    results = run_all(args, first)
    default_lr = TrainConfig().lr
    naive_lrs = [None if lr == default_lr else lr for lr in (args.naive_lrs or [default_lr])]
    second = [job("naive-tucker", j["seed"], j["tau"], {**base, "init_rank": ranks_spec(results[j["name"]]["ranks"])}, lr)
              for lr in naive_lrs
              for j in first if j["method"] == "tdlrt" and results[j["name"]]["status"] == "completed"]
    print("phase 2: naive Tucker at the ranks TDLRT ended with", flush=True)
    results.update(run_all(args, second))

    per_run = []
    for j in first + second:
        s = results[j["name"]]
        per_run.append({
            "name": j["name"], "method": j["method"], "tau": j["tau"], "seed": j["seed"], "lr": j["lr"],
            "status": s["status"],
            "accuracy": (s.get("final") or {}).get("test_accuracy"),
            "conv_compression": (s.get("compression") or {}).get("conv"),
            "network_compression": (s.get("compression") or {}).get("network"),
            "time_per_epoch_s": s.get("time_per_epoch_s"), "ranks": s.get("ranks"),
        })
    groups: dict = {}
    for r in per_run:
        lr = "" if r["method"] != "naive-tucker" else f" lr={default_lr if r['lr'] is None else r['lr']:g}"
        label = r["method"] if r["tau"] is None else (
            f"tdlrt tau={r['tau']:g}" if r["method"] == "tdlrt" else f"naive-tucker{lr} @ tdlrt tau={r['tau']:g} ranks")
        groups.setdefault((r["method"] + lr, label), []).append(r)
    table = [{"group": method, "label": label, "note": "" if rows[0]["tau"] is None else f"τ={rows[0]['tau']:g}",
              **summarize(rows)} for (method, label), rows in groups.items()]

    write_csv([{k: v for k, v in r.items() if k != "ranks"} for r in per_run], args.out / "runs.csv")
    write_csv([{k: v for k, v in r.items() if k not in ("ranks", "note")} for r in table], args.out / "results.csv")
    write_json({"settings": {**vars(args), "out": str(args.out)}, "dataset": next(
        (s["dataset"] for s in results.values() if s.get("dataset")), None), "groups": table, "runs": per_run},
        args.out / "results.json")
    (args.out / "results.md").write_text(markdown(table, args))
    print_table([{k: v for k, v in r.items() if k not in ("ranks", "group", "note")} for r in table])

    plotted = [dict(r, compression_mean=r["conv_compression_mean"], compression_std=r["conv_compression_std"])
               for r in table if r["accuracy_mean"] is not None]
    # Naive rows sit at the compression of the TDLRT row of their τ: only TDLRT points get a τ label.
    plotted = [dict(r, note=r["note"] if r["group"] == "tdlrt" else "") for r in plotted]
    # The zoom spans full and TDLRT; a collapsed naive run (10%) would otherwise flatten everything.
    ours = [r for r in plotted if r["group"] in ("full", "tdlrt")]
    low = min(100 * (r["accuracy_mean"] - r["accuracy_std"]) for r in ours)
    high = max(100 * (r["accuracy_mean"] + r["accuracy_std"]) for r in ours)
    zoom = (float(np.floor(low)) - 1, min(100.0, float(np.ceil(high)) + 0.5))
    plot_accuracy_vs_compression(plotted, args.out / "accuracy_vs_compression.png", zoom=zoom)
    curves: dict = {"curves.png": {}, "curves_naive.png": {}}
    for j in first + second:
        if j["seed"] == args.seeds[0]:
            run_dir = args.out / "runs" / j["name"]
            records = (read_jsonl(run_dir / "steps.jsonl"), read_jsonl(run_dir / "metrics.jsonl"))
            label = j["name"].rsplit("-seed", 1)[0]
            for file in (["curves_naive.png"] if j["method"] == "naive-tucker" else
                         ["curves.png", "curves_naive.png"] if j["method"] == "full" else ["curves.png"]):
                curves[file][label] = records
    for file, runs in curves.items():
        plot_curves(runs, args.out / file)
    print(f"wrote {args.out}/results.csv, results.json, results.md, runs.csv, accuracy_vs_compression.png, "
          "curves.png (full and TDLRT), curves_naive.png (full and naive Tucker), first seed")
    return 0


def markdown(table: list, args) -> str:
    def pm(mean, std, scale=100, digits=2):
        return "n/a" if mean is None else f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"

    lines = [f"Embedded MNIST subset (4000/1000 stratified seeded split), {args.epochs} epochs, seeds "
             f"{', '.join(map(str, args.seeds))}; mean ± std over seeds.", "",
             "| run | completed | test accuracy (%) | conv compression (%) | network compression (%) "
             "| time/epoch (s) |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['label']} | {r['completed']}/{r['runs']} | {pm(r['accuracy_mean'], r['accuracy_std'])} | "
                     f"{pm(r['conv_compression_mean'], r['conv_compression_std'])} | "
                     f"{pm(r['network_compression_mean'], r['network_compression_std'])} | "
                     f"{pm(r['time_per_epoch_s_mean'], r['time_per_epoch_s_std'], 1, 1)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
