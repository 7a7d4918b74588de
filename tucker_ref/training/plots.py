"""PNG plots of a run and of a sweep (matplotlib, Agg canvas, no pyplot state).

Inputs are the records the trainer writes (``steps.jsonl``, ``metrics.jsonl``; see
:mod:`tucker_ref.training.trainer`) and :func:`tucker_ref.training.metrics.core_spectra`,
so a plot can be redrawn from a finished run directory without re-training
(:func:`plot_run`). matplotlib is imported lazily: a run with ``--no-plots`` never loads it.
Every figure is rendered into memory and written with
:func:`~tucker_ref.training.runfiles.write_atomic`: an interruption leaves the previous PNG or
the new one, never an empty or cut file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runfiles import read_jsonl, write_atomic


def _figure(ncols: int = 1, nrows: int = 1, size=(6.4, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Render ``fig`` (format from the suffix of ``path``, PNG by default) and write it atomically."""
    import io

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png", dpi=dpi)
    write_atomic(path, buffer.getvalue())
    return path


def plot_curves(runs: dict, path) -> Path:
    """Training loss (per step) and test accuracy (per epoch) against the step count.

    Parameters
    ----------
    runs : dict ``label -> (step records, epoch records)``
        One curve pair per run (one label for a single run; one per method in a sweep).
    path : path-like of the PNG to write
    """
    fig, (ax_loss, ax_acc) = _figure(ncols=2)
    for label, (steps, epochs) in runs.items():
        if steps:
            ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.8,
                         label=label)
        if epochs:
            ax_acc.plot([r["step"] for r in epochs], [100 * r["test_accuracy"] for r in epochs], "o-",
                        label=label)
    ax_loss.set(xlabel="step", ylabel="training loss (mini-batch)", yscale="log")
    ax_acc.set(xlabel="step", ylabel="test accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if len(runs) > 1 or any(ax.get_lines()):
            ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_ranks(steps: list, path) -> Path | None:
    """Rank of every mode of every factorized layer against the step (one panel per layer).

    Returns ``None`` (and writes nothing) when the records carry no factorized layer.
    """
    layers = list(steps[0].get("ranks", {})) if steps else []
    if not layers:
        return None
    fig, axes = _figure(ncols=len(layers), size=(4.2, 3.4))
    x = [r["step"] for r in steps]
    for ax, name in zip(axes, layers):
        ranks = np.array([r["ranks"][name] for r in steps])
        for mode in range(ranks.shape[1]):
            ax.step(x, ranks[:, mode], where="post", label=f"mode {mode}")
        ax.set(title=name, xlabel="step", ylabel="rank")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_core_spectra(spectra: dict, path) -> Path | None:
    """Singular values of every core unfolding ``Mat_i(C)``, normalised by the largest, per layer.

    ``spectra`` is :func:`~tucker_ref.training.metrics.core_spectra` of the final model.
    Returns ``None`` when there is no factorized layer.
    """
    if not spectra:
        return None
    fig, axes = _figure(ncols=len(spectra), size=(4.2, 3.4))
    for ax, (name, per_mode) in zip(axes, spectra.items()):
        for mode, s in enumerate(per_mode):
            s = np.asarray(s, dtype=float)
            if s.size and s[0] > 0:
                ax.semilogy(np.arange(1, s.size + 1), s / s[0], "o-", ms=3, label=f"mode {mode} (r={s.size})")
        ax.set(title=name, xlabel="index k", ylabel="σ_k / σ_1 of Mat_i(C)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_accuracy_vs_compression(rows: list, path, *, zoom: tuple | None = None) -> Path:
    """Test accuracy (mean ± std over seeds) against conv compression (mean ± std), one point per row.

    Parameters
    ----------
    rows : list of dict with ``label``, ``accuracy_mean``, ``accuracy_std``,
        ``compression_mean``, ``compression_std`` (fractions; plotted in %), and ``group``
        (rows of one group, e.g. the τ values of TDLRT, are joined by a line); optional ``note``,
        the point's annotation (default ``label``). Uncompressed rows (compression 0, the dense
        baseline) are drawn as a horizontal line with a ±std band, so that the axis spans the
        compressed runs only.
    zoom : (low, high), optional
        Accuracy range in % of a second panel with the same content, for when a failed run
        (e.g. a diverged baseline at 10%) stretches the first one.
    """
    fig, axes = _figure(ncols=1 if zoom is None else 2, size=(6.4, 4.6))
    dense = [r for r in rows if r["compression_mean"] == 0]
    groups: dict = {}
    for row in rows:
        if row["compression_mean"] != 0:
            groups.setdefault(row.get("group", row["label"]), []).append(row)
    for ax in axes:
        for i, r in enumerate(dense):
            mean, std = 100 * r["accuracy_mean"], 100 * r["accuracy_std"]
            ax.axhline(mean, color=f"C{i}", ls="--", lw=1, label=f"{r['label']} (uncompressed)")
            ax.axhspan(mean - std, mean + std, color=f"C{i}", alpha=0.15)
        for j, (group, members) in enumerate(groups.items(), start=len(dense)):
            members = sorted(members, key=lambda r: r["compression_mean"])
            ax.errorbar([100 * r["compression_mean"] for r in members], [100 * r["accuracy_mean"] for r in members],
                        xerr=[100 * r["compression_std"] for r in members],
                        yerr=[100 * r["accuracy_std"] for r in members], fmt="o-" if len(members) > 1 else "s",
                        capsize=3, color=f"C{j}", label=group)
            for r in members:
                ax.annotate(r.get("note", r["label"]), (100 * r["compression_mean"], 100 * r["accuracy_mean"]),
                            fontsize="x-small", xytext=(4, -10), textcoords="offset points")
        ax.set(xlabel="conv-layer compression (%)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    if zoom is not None:
        axes[1].set_ylim(*zoom)
        axes[1].set_title(f"zoom: {zoom[0]:g}-{zoom[1]:g}%", fontsize="small")
    axes[0].legend(fontsize="small")
    return save_figure(fig, path)


def plot_run(run_dir, spectra: dict | None = None) -> list[Path]:
    """Draw the plots of one run directory from its ``steps.jsonl`` / ``metrics.jsonl``.

    Writes ``curves.png``, ``ranks.png`` (factorized models) and, when ``spectra`` is given,
    ``core_spectra.png``. Returns the paths written.
    """
    run_dir = Path(run_dir)
    steps = read_jsonl(run_dir / "steps.jsonl")
    epochs = read_jsonl(run_dir / "metrics.jsonl")
    written = [plot_curves({run_dir.name: (steps, epochs)}, run_dir / "curves.png")]
    for maybe in (plot_ranks(steps, run_dir / "ranks.png"),
                  plot_core_spectra(spectra, run_dir / "core_spectra.png") if spectra else None):
        if maybe is not None:
            written.append(maybe)
    return written
