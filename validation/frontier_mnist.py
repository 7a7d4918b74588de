"""Accuracy–compression frontier of TDLRT on the embedded MNIST subset, against the baselines.

    python validation/frontier_mnist.py --out DIR [--phase select|final|report|all] [--jobs 2]
                                        [--epochs E] [--taus ...] [--seeds 0 1 2] [--quick]

TDLRT starts at full rank (or at the cap), so τ alone decides the ranks. Two protocols:

``paper``
    the paper's algorithm on every batch (augment, one S-step, truncate), heavy-ball
    momentum 0.9 on the core, constant lr;
``authors``
    the authors' training cycle: augment on one batch, S-steps on it and the next 9
    batches, truncate (``--s-steps 10``); AdamW (weight decay 0, as their driver), cosine
    schedule, gradient-norm clipping at 1.0, ranks capped at ``n/2`` (``--rmax-fraction
    0.5``), ``--rmin 3``.

Baselines at TDLRT's final ranks (the ``paper`` run of the same seed and τ), each at its own
learning rate: ``naive-tucker`` (core and factors as ordinary parameters, momentum),
``fixed-rank`` (fixed-rank BUG layer by layer, ``--method fixed-rank-layerwise``; plain SGD,
the trainer has no momentum for it),
``decompose-finetune`` (``full`` for half the epochs, ST-HOSVD of every factorized layer at
the ranks, then ``naive-tucker`` for the other half: the same total number of epochs); and
the ``full`` model.

Phases (each resumable: a completed run is reused, an interrupted one resumed):

``select``
    seed 0, ``--validation 500`` (500 of the 4,000 training images set aside, stratified):
    every method's learning rate from a small grid (:data:`LR_GRIDS`), TDLRT at
    :data:`SELECT_TAU`; the baselines at the ranks of the selection TDLRT run. The choice is
    the best mean *validation* accuracy of the last :data:`SCORE_EPOCHS` epochs; the test set
    is not read for it.
``final``
    all 4,000 training images, seeds ``--seeds``, the chosen learning rates: TDLRT, both
    protocols, every τ; the baselines at :data:`BASELINE_TAUS`; ``full``. Test accuracy
    reported once per run.
``report``
    tables and figures from what has completed (``DIR/frontier.{csv,json,md}``,
    ``frontier_conv.png``, ``frontier_network.png``, ``rank_trajectories.png``); lists the
    runs that remain.

Threads: one BLAS thread per run (``one_blas_thread``), ``--jobs`` runs in parallel.
``--quick``: a smoke run (2 epochs of 4 steps on 512 images, one τ, one seed), not a result.
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import argparse
import concurrent.futures
import io
import json
from pathlib import Path

import numpy as np
from common import new_figure, print_table, save_figure, write_csv, write_json

from tucker_ref.training import TrainConfig, train
from tucker_ref.training.runfiles import read_jsonl

#: TDLRT protocols: the trainer settings that differ from its defaults.
PROTOCOLS = {
    "paper": {"s_steps": 1, "optimizer": "momentum"},
    "authors": {"s_steps": 10, "optimizer": "adamw", "weight_decay": 0.0, "lr_schedule": "cosine",
                "clip_grad_norm": 1.0, "rmax_fraction": 0.5, "rmin": 3},
}
#: The optimizer part of the authors' protocol, also run on the full model (``full-authors``):
#: without it a TDLRT-authors run would be compared with a model trained by another optimizer.
AUTHORS_OPTIMIZER = {k: PROTOCOLS["authors"][k] for k in ("optimizer", "weight_decay", "lr_schedule",
                                                          "clip_grad_norm")}
#: Learning-rate grids of the selection phase (per method or TDLRT protocol).
#: A grid whose best value came out at an edge was extended by one value beyond it (the
#: fourth entries): the choice is then inside the grid or at a value that diverged or lost.
LR_GRIDS = {
    "tdlrt-paper": [0.02, 0.05, 0.1],
    "tdlrt-authors": [5e-4, 1e-3, 3e-3, 1e-2],
    "full": [0.02, 0.05, 0.1, 0.2],
    "full-authors": [1e-3, 3e-3, 1e-2, 3e-2],
    "naive-tucker": [0.005, 0.02, 0.05, 0.002],
    "fixed-rank": [0.05, 0.1, 0.2, 0.5],
    "decompose-finetune": [0.005, 0.02, 0.05],
}
#: The selection score: mean validation accuracy over the last epochs (one epoch's accuracy
#: on 500 images moves by about a point from epoch to epoch).
SCORE_EPOCHS = 5
#: τ of the selection runs (the middle of the grid).
SELECT_TAU = 0.15
#: τ grids of the final TDLRT runs, per protocol: wide enough to span the conv compression from
#: the start (full rank, or the cap of ``authors``) to about 98%. The first grid was
#: 0.03-0.3 for both; 0.12 was added where ``paper`` jumps from 20% to 94% compression, 0.25
#: where ``authors`` passes 90%, 0.4 and 0.5 beyond its 94% at 0.3 (its ranks start at the cap
#: and shrink slower).
TAUS = {"paper": [0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3],
        "authors": [0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]}
#: τ values at whose TDLRT ranks the baselines run in the final phase.
BASELINE_TAUS = [0.05, 0.1, 0.15, 0.2, 0.3]
#: The trainer method of each baseline group. ``fixed-rank`` is fixed-rank BUG layer by layer
#: (each layer's S-step gradient with the other layers at the step's start): the study of
#: docs/results.md ran it when that was the trainer's ``fixed-rank`` (those runs' summaries say
#: ``fixed-rank``); the whole-network version is now ``--method fixed-rank``.
BASELINE_METHODS = {"naive-tucker": "naive-tucker", "fixed-rank": "fixed-rank-layerwise"}
#: Training images set aside for the selection phase.
VALIDATION_IMAGES = 500
#: Default number of epochs of every run.
EPOCHS = 30


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", required=True, type=Path,
                   help="output directory (docs/figures/frontier holds the committed study: per run its "
                        "summary.json and metrics.jsonl, so a later session continues it)")
    p.add_argument("--phase", choices=("select", "final", "report", "all"), default="all")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per run (default {EPOCHS})")
    p.add_argument("--taus", type=float, nargs="+", default=None,
                   help="τ values of the final TDLRT runs, both protocols (default: TAUS, per protocol)")
    p.add_argument("--baseline-taus", type=float, nargs="+", default=BASELINE_TAUS,
                   help="τ values at whose TDLRT ranks the baselines run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the final phase")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs of 4 steps on 512 images")
    args = p.parse_args(argv)
    if args.quick:
        args.taus, args.baseline_taus, args.seeds, args.epochs = [0.2], [0.2], [0], 2
    args.taus = {p: TAUS[p] for p in PROTOCOLS} if args.taus is None else {p: args.taus for p in PROTOCOLS}
    args.out.mkdir(parents=True, exist_ok=True)
    return args


# ---------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------
def run_one(name: str, out: Path, settings: dict) -> dict:
    """Train (or resume, or reuse) one configuration in ``out/runs/name``; return its summary."""
    run_dir = out / "runs" / name
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary["status"] in ("completed", "diverged"):
            return summary
    resume = (run_dir / "checkpoint.json").is_file()
    config = TrainConfig(out=str(run_dir), quiet=True, plots=False, resume=resume, **settings)
    try:
        return train(config, stream=io.StringIO())
    except Exception as exc:  # a diverged or failed run is a result of the study, not its end
        return {"status": "failed", "message": f"{type(exc).__name__}: {exc}", "out": str(run_dir),
                "method": settings["method"], "args": settings}


def run_all(out: Path, jobs: list, workers: int) -> dict:
    """``{name: summary}`` of ``jobs`` (dicts with ``name`` and ``settings``), ``workers`` processes."""
    if not jobs:
        return {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {j["name"]: pool.submit(run_one, j["name"], out, j["settings"]) for j in jobs}
        results = {}
        for name, future in futures.items():
            results[name] = s = future.result()
            final = s.get("final") or {}
            shown = [f"{key} {100 * final[key]:.2f}%" for key in ("validation_accuracy", "test_accuracy")
                     if final.get(key) is not None]
            print(f"  {name}: {s['status']} " + ", ".join(shown) + (f" ({s['message']})" if s.get("message") else ""),
                  flush=True)
    return results


def ranks_spec(ranks: dict) -> str:
    """``--init-rank`` spec reproducing ``ranks`` exactly (``conv1=4x1x5x5,...``)."""
    return ",".join(f"{layer}={'x'.join(str(r) for r in shape)}" for layer, shape in ranks.items())


def tdlrt_job(protocol: str, tau: float, seed: int, lr: float, base: dict, tag: str) -> dict:
    return {"name": f"{tag}tdlrt-{protocol}-tau{tau:g}-lr{lr:g}-seed{seed}", "group": f"tdlrt-{protocol}",
            "tau": tau, "seed": seed, "lr": lr,
            "settings": {**base, **PROTOCOLS[protocol], "method": "tdlrt", "tau": tau, "lr": lr, "seed": seed}}


def full_job(seed: int, lr: float, base: dict, tag: str, epochs: int | None = None, authors: bool = False) -> dict:
    """The full model (``full``), with the authors' optimizer (``full-authors``), or the
    pretraining of decompose-then-finetune (``epochs`` given)."""
    suffix = "" if epochs is None else f"-epochs{epochs}"
    group = "full-authors" if authors else "full"
    settings = {**base, **(AUTHORS_OPTIMIZER if authors else {}), "method": "full", "lr": lr, "seed": seed}
    if epochs is not None:
        settings["epochs"] = epochs
    return {"name": f"{tag}{group}-lr{lr:g}-seed{seed}{suffix}", "group": group if epochs is None else "pretrain",
            "tau": None, "seed": seed, "lr": lr, "settings": settings}


def baseline_jobs(group: str, tau: float, seed: int, lr: float, ranks: dict, base: dict, tag: str,
                  pretrain_dir: Path | None = None) -> dict:
    """A baseline run at ``ranks`` (TDLRT's final ranks of the same seed and τ)."""
    settings = {**base, "lr": lr, "seed": seed, "init_rank": ranks_spec(ranks)}
    if group == "decompose-finetune":
        settings.update(method="naive-tucker", init_from=str(pretrain_dir), epochs=base["epochs"] - base["epochs"] // 2)
    else:
        settings["method"] = BASELINE_METHODS[group]
    return {"name": f"{tag}{group}-tau{tau:g}-lr{lr:g}-seed{seed}", "group": group, "tau": tau, "seed": seed,
            "lr": lr, "settings": settings}


def completed(summary: dict | None) -> bool:
    return summary is not None and summary.get("status") == "completed"


# ---------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------
def select(args) -> dict:
    """Selection runs on the validation split; returns ``{group: chosen lr}`` (also in ``selection.json``)."""
    base = {"epochs": args.epochs, "validation": VALIDATION_IMAGES}
    if args.quick:
        base.update(train_subset=512 + VALIDATION_IMAGES, test_subset=256)
    tag = "select-"
    first = [tdlrt_job(p, SELECT_TAU, 0, lr, base, tag) for p in PROTOCOLS for lr in LR_GRIDS[f"tdlrt-{p}"]]
    first += [full_job(0, lr, base, tag) for lr in LR_GRIDS["full"]]
    first += [full_job(0, lr, base, tag, authors=True) for lr in LR_GRIDS["full-authors"]]
    print(f"select 1/2: TDLRT at tau {SELECT_TAU} and full, seed 0, {VALIDATION_IMAGES} validation images", flush=True)
    results = run_all(args.out, first, args.jobs)
    chosen = {g: best_lr([j for j in first if j["group"] == g], results, args.out)
              for g in ("tdlrt-paper", "tdlrt-authors", "full", "full-authors")}
    anchor = next(j for j in first if j["group"] == "tdlrt-paper" and j["lr"] == chosen["tdlrt-paper"])
    ranks = results[anchor["name"]]["ranks"]
    pretrain = full_job(0, chosen["full"], base, tag, epochs=args.epochs // 2)
    results.update(run_all(args.out, [pretrain], args.jobs))
    second = [baseline_jobs(g, SELECT_TAU, 0, lr, ranks, base, tag, args.out / "runs" / pretrain["name"])
              for g in ("naive-tucker", "fixed-rank", "decompose-finetune") for lr in LR_GRIDS[g]]
    print(f"select 2/2: baselines at the ranks of {anchor['name']}: {ranks}", flush=True)
    results.update(run_all(args.out, second, args.jobs))
    for g in ("naive-tucker", "fixed-rank", "decompose-finetune"):
        chosen[g] = best_lr([j for j in second if j["group"] == g], results, args.out)
    rows = [{"run": j["name"], "group": j["group"], "lr": j["lr"], "status": results[j["name"]]["status"],
             "validation_accuracy": (results[j["name"]].get("final") or {}).get("validation_accuracy"),
             "score": validation_score(args.out, j["name"]) if completed(results[j["name"]]) else None}
            for j in first + second]
    write_csv(rows, args.out / "selection.csv")
    write_json({"chosen_lr": chosen, "tau": SELECT_TAU, "validation_images": VALIDATION_IMAGES, "grids": LR_GRIDS,
                "score": f"mean validation accuracy of the last {SCORE_EPOCHS} epochs", "epochs": args.epochs,
                "runs": rows}, args.out / "selection.json")
    print(f"chosen learning rates (best mean validation accuracy of the last {SCORE_EPOCHS} epochs):", chosen,
          flush=True)
    return chosen


def validation_score(out: Path, name: str) -> float:
    """Mean validation accuracy over the last :data:`SCORE_EPOCHS` epochs of a run."""
    epochs = read_jsonl(out / "runs" / name / "metrics.jsonl")
    return float(np.mean([r["validation_accuracy"] for r in epochs[-SCORE_EPOCHS:]]))


def best_lr(jobs: list, results: dict, out: Path) -> float:
    """The lr of the completed job with the best :func:`validation_score` (ties: the smaller lr)."""
    scored = [(validation_score(out, j["name"]), -j["lr"], j["lr"]) for j in jobs if completed(results[j["name"]])]
    if not scored:
        raise RuntimeError(f"no completed selection run among {[j['name'] for j in jobs]}")
    return max(scored)[2]


def final_jobs(args, chosen: dict, results: dict | None = None) -> tuple[list, list, list]:
    """``(tdlrt and full jobs, pretrain jobs, baseline jobs)`` of the final phase; the baselines need
    the TDLRT results (``None``: not yet known, empty list)."""
    base = {"epochs": args.epochs}
    if args.quick:
        base.update(train_subset=512, test_subset=256)
    first = [tdlrt_job(p, t, s, chosen[f"tdlrt-{p}"], base, "") for p in PROTOCOLS for t in args.taus[p]
             for s in args.seeds]
    first += [full_job(s, chosen["full"], base, "") for s in args.seeds]
    if "full-authors" in chosen:  # a study selected before that group existed has no lr for it yet
        first += [full_job(s, chosen["full-authors"], base, "", authors=True) for s in args.seeds]
    pretrain = [full_job(s, chosen["full"], base, "", epochs=args.epochs // 2) for s in args.seeds]
    second = []
    if results is not None:
        for t in args.baseline_taus:
            for s in args.seeds:
                anchor = tdlrt_job("paper", t, s, chosen["tdlrt-paper"], base, "")
                if not completed(results.get(anchor["name"])):
                    continue
                ranks = results[anchor["name"]]["ranks"]
                pre = next(p for p in pretrain if p["seed"] == s)
                second += [baseline_jobs(g, t, s, chosen[g], ranks, base, "", args.out / "runs" / pre["name"])
                           for g in ("naive-tucker", "fixed-rank", "decompose-finetune")]
    return first, pretrain, second


def final(args, chosen: dict) -> dict:
    first, pretrain, _ = final_jobs(args, chosen)
    print(f"final 1/2: TDLRT ({len(first) - 2 * len(args.seeds)} runs), full models and pretraining, seeds "
          f"{args.seeds}", flush=True)
    results = run_all(args.out, first + pretrain, args.jobs)
    _, _, second = final_jobs(args, chosen, results)
    print(f"final 2/2: baselines at TDLRT's ranks ({len(second)} runs)", flush=True)
    results.update(run_all(args.out, second, args.jobs))
    return results


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def load_summary(out: Path, name: str) -> dict | None:
    path = out / "runs" / name / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def mean_std(values) -> tuple[float | None, float | None]:
    values = np.array([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def report(args, chosen: dict) -> list:
    first, pretrain, _ = final_jobs(args, chosen)
    results = {j["name"]: load_summary(args.out, j["name"]) for j in first + pretrain}
    _, _, second = final_jobs(args, chosen, results)
    results.update({j["name"]: load_summary(args.out, j["name"]) for j in second})
    finished = ("completed", "diverged")
    missing = [j["name"] for j in first + pretrain + second
               if (results[j["name"]] or {}).get("status") not in finished]
    diverged: dict = {}
    runs = []
    for j in first + second:
        s = results[j["name"]]
        if (s or {}).get("status") == "diverged":
            diverged.setdefault((j["group"], j["tau"]), []).append(j["seed"])
        if not completed(s):
            continue
        runs.append({"run": j["name"], "group": j["group"], "tau": j["tau"], "seed": j["seed"], "lr": j["lr"],
                     "test_accuracy": s["final"]["test_accuracy"], "conv_compression": s["compression"]["conv"],
                     "network_compression": s["compression"]["network"], "ranks": s["ranks"],
                     "time_per_epoch_s": s.get("time_per_epoch_s")})
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["group"], r["tau"]), []).append(r)
    table = []
    for (group, tau), rows in groups.items():
        row = {"group": group, "tau": tau, "lr": rows[0]["lr"], "seeds": len(rows),
               "diverged_seeds": diverged.get((group, tau), [])}
        for key in ("test_accuracy", "conv_compression", "network_compression", "time_per_epoch_s"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(r[key] for r in rows)
        row["ranks"] = {r["seed"]: r["ranks"] for r in rows}
        table.append(row)
    checks = targets(table, runs)
    write_csv([{k: v for k, v in r.items() if k != "ranks"} for r in runs], args.out / "frontier_runs.csv")
    write_csv([{k: v for k, v in r.items() if k != "ranks"} for r in table], args.out / "frontier.csv")
    write_json({"chosen_lr": chosen, "epochs": args.epochs, "seeds": args.seeds, "taus": args.taus,
                "baseline_taus": args.baseline_taus, "protocols": PROTOCOLS, "groups": table, "runs": runs,
                "targets": checks, "missing": missing}, args.out / "frontier.json")
    (args.out / "frontier.md").write_text(markdown(table, args) + "\n" + targets_markdown(checks))
    print_table([{k: v for k, v in r.items() if k != "ranks"} for r in table])
    if table:
        plot_frontier(table, args.out)
        plot_rank_trajectories(args, chosen)
    print(f"{len(runs)} runs completed, {sum(map(len, diverged.values()))} diverged, {len(missing)} remaining"
          + (f": {missing}" if missing else ""), flush=True)
    return missing


def difference(a: list, b: list) -> dict:
    """Mean of ``a`` minus mean of ``b`` with its standard error ``sqrt(s_a²/n_a + s_b²/n_b)``;
    ``inside_noise`` when the difference is below two standard errors."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt((a.var(ddof=1) / a.size if a.size > 1 else 0.0) + (b.var(ddof=1) / b.size if b.size > 1 else 0.0)))
    judged = a.size > 1 and b.size > 1
    return {"difference": diff, "standard_error": se if judged else None,
            "inside_noise": abs(diff) < 2 * se if judged else None}


def targets(table: list, runs: list) -> dict:
    """The targets of docs/results.md#against-the-targets, measured: ranks found by τ,
    accuracy at ≥ 90% conv compression, TDLRT against the baselines at equal compression."""
    fulls = {g: float(np.mean([r["test_accuracy"] for r in runs if r["group"] == g]))
             for g in ("full", "full-authors") if any(r["group"] == g for r in runs)}
    if not fulls:
        return {}
    # The target is read against the better of the two full models (the stricter reading).
    full_mean = max(fulls.values())
    out = {"full_test_accuracy": fulls, "reference": full_mean, "rank_halving": [], "accuracy_at_90": [],
           "versus_baselines": []}
    start = {"tdlrt-paper": (50, 20), "tdlrt-authors": (25, 10)}  # conv2 channel ranks at the start
    for row in table:
        if not row["group"].startswith("tdlrt"):
            continue
        conv2 = [ranks["conv2"][:2] for ranks in row["ranks"].values()]
        halved = all(r[0] < start[row["group"]][0] / 2 and r[1] < start[row["group"]][1] / 2 for r in conv2)
        gap = full_mean - row["test_accuracy_mean"]
        entry = {"group": row["group"], "tau": row["tau"], "conv2": conv2, "gap_to_full": gap,
                 "conv_compression": row["conv_compression_mean"]}
        if halved:
            out["rank_halving"].append({**entry, "met": gap <= 0.01})
        if row["conv_compression_mean"] >= 0.9:
            out["accuracy_at_90"].append({**entry, "met": gap <= 0.01})
    for row in table:
        if row["group"] not in ("naive-tucker", "fixed-rank", "decompose-finetune"):
            continue
        tdlrt = [r["test_accuracy"] for r in runs if r["group"] == "tdlrt-paper" and r["tau"] == row["tau"]]
        base = [r["test_accuracy"] for r in runs if r["group"] == row["group"] and r["tau"] == row["tau"]]
        if tdlrt and base:
            out["versus_baselines"].append({"baseline": row["group"], "tau": row["tau"],
                                            "conv_compression": row["conv_compression_mean"],
                                            **difference(tdlrt, base)})
    return out


def targets_markdown(checks: dict) -> str:
    if not checks:
        return "Targets: the full model has not completed yet.\n"
    fulls = ", ".join(f"{g} {100 * v:.2f}%" for g, v in checks["full_test_accuracy"].items())
    lines = [f"Full models (mean test accuracy): {fulls}; the gaps below are to the better one, "
             f"{100 * checks['reference']:.2f}%.", "",
             "| target | TDLRT run | τ | conv compression (%) | gap to full (points) | met |", "|---|---|---|---|---|---|"]
    for key, label in (("rank_halving", "conv2 channel ranks below half their start, ≤ 1 point from full"),
                       ("accuracy_at_90", "≥ 90% conv compression, ≤ 1 point from full")):
        for e in checks[key]:
            lines.append(f"| {label} | {e['group']} | {e['tau']:g} | {100 * e['conv_compression']:.2f} | "
                         f"{100 * e['gap_to_full']:.2f} | {'yes' if e['met'] else 'no'} |")
    lines += ["", "| TDLRT (paper) − baseline at equal ranks | τ | conv compression (%) | difference (points) | "
              "standard error | inside the noise (< 2 s.e.) |", "|---|---|---|---|---|---|"]
    for e in checks["versus_baselines"]:
        se = "n/a (one seed)" if e["standard_error"] is None else f"{100 * e['standard_error']:.2f}"
        noise = "n/a" if e["inside_noise"] is None else ("yes" if e["inside_noise"] else "no")
        lines.append(f"| {e['baseline']} | {e['tau']:g} | {100 * e['conv_compression']:.2f} | "
                     f"{100 * e['difference']:+.2f} | {se} | {noise} |")
    return "\n".join(lines) + "\n"


def markdown(table: list, args) -> str:
    def pm(mean, std, scale=100, digits=2):
        return "n/a" if mean is None else f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"

    lines = [f"Embedded MNIST subset (4000/1000 stratified split), {args.epochs} epochs, seeds "
             f"{', '.join(map(str, args.seeds))}; mean ± std over seeds (ddof 1).", "",
             "Seeds: completed runs; a run that diverged (non-finite loss) is listed as such and left out of "
             "the means.", "",
             "| run | τ | lr | seeds | test accuracy (%) | conv compression (%) | network compression (%) | "
             "final ranks conv1 / conv2 / fc1 (first seed) |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(table, key=lambda r: (r["group"], r["tau"] or 0)):
        ranks = next(iter(r["ranks"].values()))
        shown = " / ".join("×".join(map(str, ranks[k][:2])) for k in ("conv1", "conv2", "fc1") if k in ranks) or "—"
        tau = "—" if r["tau"] is None else f"{r['tau']:g}"
        seeds = str(r["seeds"]) + (f" (+{len(r['diverged_seeds'])} diverged)" if r["diverged_seeds"] else "")
        lines.append(f"| {r['group']} | {tau} | {r['lr']:g} | {seeds} | "
                     f"{pm(r['test_accuracy_mean'], r['test_accuracy_std'])} | "
                     f"{pm(r['conv_compression_mean'], r['conv_compression_std'])} | "
                     f"{pm(r['network_compression_mean'], r['network_compression_std'])} | {shown} |")
    return "\n".join(lines) + "\n"


STYLE = {"tdlrt-paper": ("o-", "C0"), "tdlrt-authors": ("s-", "C1"), "naive-tucker": ("v", "C2"),
         "fixed-rank": ("^", "C3"), "decompose-finetune": ("D", "C4")}


def plot_frontier(table: list, out: Path) -> None:
    fulls = [(r, color) for g, color in (("full", "0.85"), ("full-authors", "#f3d9b1"))
             for r in table if r["group"] == g]
    for kind in ("conv", "network"):
        fig, (ax,) = new_figure(size=(6.4, 4.4))
        for full, color in fulls:
            m, s = 100 * full["test_accuracy_mean"], 100 * full["test_accuracy_std"]
            ax.axhspan(m - s, m + s, color=color, alpha=0.8, label=f"{full['group']} {m:.2f} ± {s:.2f}%")
        if fulls:
            best = max(100 * full["test_accuracy_mean"] for full, _ in fulls)
            ax.axhline(best - 1, color="0.5", ls=":", lw=1, label="best full − 1 point")
        for group, (marker, color) in STYLE.items():
            rows = sorted((r for r in table if r["group"] == group), key=lambda r: r[f"{kind}_compression_mean"])
            if not rows:
                continue
            ax.errorbar([100 * r[f"{kind}_compression_mean"] for r in rows],
                        [100 * r["test_accuracy_mean"] for r in rows],
                        xerr=[100 * r[f"{kind}_compression_std"] for r in rows],
                        yerr=[100 * r["test_accuracy_std"] for r in rows], fmt=marker, color=color, capsize=3,
                        label=group)
            if group.startswith("tdlrt"):
                for r in rows:
                    ax.annotate(f"τ={r['tau']:g}", (100 * r[f"{kind}_compression_mean"], 100 * r["test_accuracy_mean"]),
                                textcoords="offset points", xytext=(4, -10), fontsize=7, color=color)
        ax.set_xlabel(f"{kind} compression (%)")
        ax.set_ylabel("test accuracy (%)")
        accs = [100 * (r["test_accuracy_mean"] - r["test_accuracy_std"]) for r in table
                if r["group"] in ("full", "full-authors", "tdlrt-paper", "tdlrt-authors")]
        ax.set_ylim(max(0.0, min(accs) - 2), 100.0)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
        save_figure(fig, out, f"frontier_{kind}")


def plot_rank_trajectories(args, chosen: dict) -> None:
    """Channel ranks of conv1, conv2 and fc1 at the end of every epoch, first seed, every τ, both protocols."""
    fig, flat = new_figure(ncols=3, nrows=2, size=(4.0, 3.2))
    axes = flat.reshape(2, 3)
    for row, protocol in enumerate(PROTOCOLS):
        for t in args.taus[protocol]:
            job = tdlrt_job(protocol, t, args.seeds[0], chosen[f"tdlrt-{protocol}"], {}, "")
            path = args.out / "runs" / job["name"] / "metrics.jsonl"
            if not path.is_file():
                continue
            epochs = read_jsonl(path)
            x = [r["epoch"] for r in epochs]
            for col, layer in enumerate(("conv1", "conv2", "fc1")):
                line, = axes[row][col].plot(x, [r["ranks"][layer][0] for r in epochs], marker=".", label=f"τ={t:g}")
                if layer == "conv2":
                    axes[row][col].plot(x, [r["ranks"][layer][1] for r in epochs], ls="--", lw=0.8,
                                        color=line.get_color())
        for col, layer in enumerate(("conv1 r_out", "conv2 r_out (solid), r_in (dashed)", "fc1 rank")):
            axes[row][col].set_title(f"{protocol}: {layer}", fontsize=9)
            axes[row][col].set_xlabel("epoch")
        axes[row][0].legend(fontsize=7)
    save_figure(fig, args.out, "rank_trajectories")


def main(argv=None) -> int:
    args = parse_args(argv)
    selection = args.out / "selection.json"
    if args.phase in ("select", "all"):
        chosen = select(args)
    elif selection.is_file():
        chosen = json.loads(selection.read_text())["chosen_lr"]
    else:
        raise SystemExit(f"{selection} is missing: run --phase select first")
    if args.phase in ("final", "all"):
        final(args, chosen)
    if args.phase in ("report", "final", "all"):
        report(args, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
