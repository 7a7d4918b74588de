"""Compare two sets of training runs with the same names: a recorded study and a redone one.

    python validation/compare_runs.py docs/figures/frontier/runs docs/figures/frontier_rerun_2026-11-30/runs

For every run directory present in both (matched by name, e.g. ``tdlrt-paper-tau0.1-lr0.05-seed2``)
prints the final test accuracy and ranks of both, whether their ``metrics.jsonl`` records are
identical, and then, per group (the name without its ``-seedN`` part), the mean ± std
(ddof 1) of the test accuracy of both and the difference of the means next to the spread,
so a reader can see whether a change of code moved a result beyond the seed-to-seed noise.
Runs present on one side only are counted (the first five named). Reads ``summary.json`` and ``metrics.jsonl`` only.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(run: Path) -> dict | None:
    path = run / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    metrics = run / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    timing_free = [{k: v for k, v in r.items() if "time" not in k} for r in records]
    return {"accuracy": (summary.get("final") or {}).get("test_accuracy"), "ranks": summary.get("ranks"),
            "status": summary.get("status"), "records": timing_free}


def ranks_text(ranks) -> str:
    if not ranks:
        return "-"
    return " / ".join("x".join(map(str, r[:2])) if len(r) == 4 else str(r[0]) for r in ranks.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recorded", type=Path, help="directory of the recorded runs")
    p.add_argument("redone", type=Path, help="directory of the redone runs")
    args = p.parse_args(argv)
    names_a = {d.name for d in args.recorded.iterdir() if d.is_dir()}
    names_b = {d.name for d in args.redone.iterdir() if d.is_dir()}
    groups = defaultdict(lambda: ([], []))
    print(f"{'run':48s} {'accuracy recorded -> redone':>28s}  {'ranks recorded -> redone':>40s}  records")
    for name in sorted(names_a & names_b):
        a, b = load(args.recorded / name), load(args.redone / name)
        if a is None or b is None:
            print(f"{name:48s} no summary.json on the {'recorded' if a is None else 'redone'} side")
            continue
        same = "identical" if a["records"] == b["records"] else "differ"
        acc = (f"{a['accuracy']:.4f} -> {b['accuracy']:.4f}" if None not in (a["accuracy"], b["accuracy"])
               else f"{a['status']} -> {b['status']}")
        print(f"{name:48s} {acc:>28s}  {ranks_text(a['ranks']):>18s} -> {ranks_text(b['ranks']):18s}  {same}")
        if None not in (a["accuracy"], b["accuracy"]):
            group = re.sub(r"-seed\d+", "", name)
            groups[group][0].append(100 * a["accuracy"])
            groups[group][1].append(100 * b["accuracy"])
    for side, names in (("recorded", names_a - names_b), ("redone", names_b - names_a)):
        if names:
            shown = sorted(names)[:5]
            print(f"only {side}: {len(names)} runs ({', '.join(shown)}{', …' if len(names) > 5 else ''})")
    print(f"\n{'group':40s} {'recorded (%)':>16s} {'redone (%)':>16s} {'difference':>11s}")
    for group, (a, b) in sorted(groups.items()):
        a, b = np.array(a), np.array(b)
        spread = lambda x: f"{x.mean():6.2f} ± {x.std(ddof=1):4.2f}" if len(x) > 1 else f"{x.mean():6.2f}       "
        print(f"{group:40s} {spread(a):>16s} {spread(b):>16s} {b.mean() - a.mean():+10.2f}  (n = {len(a)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
