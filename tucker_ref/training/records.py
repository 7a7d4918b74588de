"""What a run writes about itself: its logs, its summary and the lines printed at the end.

:class:`RunLog` writes the three files of a run directory, ``steps.jsonl``, ``metrics.jsonl``
and ``summary.json`` (their fields are listed in :mod:`~tucker_ref.training.trainer`);
:func:`evaluate` measures a model on a data set, :func:`descent_record` is the
``--check-descent`` record of a step, :func:`chance_level` tells whether a final accuracy is
better than always answering the most frequent digit, and :func:`format_summary` turns a
summary into the lines ``tucker-ref train`` prints.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..data import iterate_minibatches
from ..nn.functional import softmax_cross_entropy
from .config import METHOD_SPECS
from .metrics import core_spectra, parameter_report, ranks_of
from .runfiles import append_jsonl, keep_jsonl, read_jsonl, write_json

#: Mini-batch size of the evaluation passes (memory bound: the im2col of conv2 at 500 images
#: is 16M entries).
EVAL_BATCH_SIZE = 500
#: Standard errors of the majority-digit rate that a final test accuracy must exceed not to
#: count as chance level (:func:`chance_level`): 3 keeps a collapsed network (one digit for
#: every image) from passing by luck on a test set of a few hundred images.
CHANCE_Z = 3.0


def evaluate(model, dataset, batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset`` (forward passes only)."""
    loss_sum, correct = 0.0, 0
    for x, y in iterate_minibatches(dataset, batch_size, None):
        logits = model.forward(x)
        loss, _ = softmax_cross_entropy(logits, y)
        loss_sum += float(loss) * len(y)
        correct += int(np.sum(np.argmax(logits, axis=1) == y))
    return loss_sum / len(dataset), correct / len(dataset)


def chance_level(labels, accuracy=None, z: float = CHANCE_Z) -> dict:
    """Whether a test accuracy is at chance level on a test set with ``labels``.

    ``majority_accuracy`` ``p`` is the accuracy of always answering the most frequent digit;
    ``threshold = p + z·sqrt(p(1 − p)/n)`` (``n`` test images, ``z`` standard errors of the
    binomial rate); ``at_chance = accuracy <= threshold`` (``None`` without an accuracy). On
    the default 1,000 balanced test images the threshold is 12.8%; a collapsed network that
    answers one digit for every image scores about ``p``.
    """
    labels = np.asarray(labels)
    n = labels.size
    p = float(np.bincount(labels).max()) / n
    threshold = p + z * math.sqrt(p * (1 - p) / n)
    return {"majority_accuracy": p, "threshold": threshold, "test_images": int(n),
            "at_chance": None if accuracy is None else bool(accuracy <= threshold)}


def descent_record(loss_before, loss_after, lr, proj_grad_sq, eta, grad_norm_before, grad_norm_after) -> dict:
    """The ``--check-descent`` record of one plain-SGD step, measured on one mini-batch.

    The descent bound of docs/theory.md §5: ``L(Y1) ≤ L(Y0) − λ(1 − λL/2)‖Π∇L(Y0)‖² + B·η``.
    The network loss is not L-smooth globally, so ``L`` and ``B`` are left to the analysis
    (docs/validation.md §4 estimates ``L̂``, ``B̂``); logged here per step:

    * ``loss_before``, ``loss_after``, ``observed_change`` = ``L(Y1) − L(Y0)`` on the same batch;
    * ``lr``; ``proj_grad_sq`` = ``‖Π∇L(Y0)‖²`` over all parameters (the factorized layers'
      ``proj_grad_norm²`` plus the squared gradients of the dense parameters, for which Π is
      the identity); ``first_order_term`` = ``−λ·proj_grad_sq``;
    * ``eta`` = ``sqrt(Σ_layers η²)``, the truncation distance of the whole parameter vector;
    * ``grad_norm_before`` / ``grad_norm_after`` = ``‖∇L‖`` over all parameters (dense kernel
      gradients) at ``Y0`` and ``Y1``, from which ``B̂`` can be bounded;
      ``eta_term`` = ``grad_norm_after·eta``.

    ``proj_grad_sq`` and ``eta`` are ``None`` for methods whose step is not of that form
    (``naive-tucker``, ``fixed-rank``, ``riemannian``; each update rule says which terms it has,
    :meth:`~tucker_ref.training.methods.UpdateRule.descent_terms`).
    """
    return {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "observed_change": loss_after - loss_before,
        "lr": lr,
        "proj_grad_sq": proj_grad_sq,
        "first_order_term": None if proj_grad_sq is None else -lr * proj_grad_sq,
        "eta": eta,
        "grad_norm_before": grad_norm_before,
        "grad_norm_after": grad_norm_after,
        "eta_term": None if eta is None else grad_norm_after * eta,
    }


def format_summary(summary: dict) -> str:
    """The lines printed at the end of ``tucker-ref train``."""
    lines = [f"{summary['method']} on {summary['dataset']}: status {summary['status']}"]
    final = summary.get("final") or {}
    if final.get("test_accuracy") is not None:
        lines.append(f"  test accuracy {100 * final['test_accuracy']:.2f}% (test loss {final['test_loss']:.4f}) after "
                     f"{summary['epochs_completed']} epoch(s), {summary['steps']} steps")
    if final.get("validation_accuracy") is not None:
        lines.append(f"  validation accuracy {100 * final['validation_accuracy']:.2f}% "
                     f"(loss {final['validation_loss']:.4f})")
    args = summary.get("args") or {}
    # A method that chooses its ranks shows where they started; the others keep theirs.
    initial = (summary.get("initial_ranks") or {}) if METHOD_SPECS[summary["method"]].chooses_ranks else {}
    if initial:
        start = "a full-rank start" if args.get("init_rank") is None and args.get("rmax_fraction") is None else \
            "the initial ranks"
        lines.append(f"  ranks found by tau = {args.get('tau')} from {start} (initial -> final):")
    for name, ranks in (summary.get("ranks") or {}).items():
        before = f"{tuple(initial[name])} -> " if name in initial else ""
        lines.append(f"  ranks {name}: {before}{tuple(ranks)}")
    comp = summary.get("compression") or {}
    if comp.get("conv") is not None:
        lines.append(f"  compression: conv layers {100 * comp['conv']:.2f}%, whole network "
                     f"{100 * comp['network']:.2f}% (weights only, biases excluded)")
    if summary.get("time_per_epoch_s") is not None:
        lines.append(f"  time per epoch {summary['time_per_epoch_s']:.2f} s, "
                     f"per step {1e3 * summary['time_per_step_s']:.1f} ms")
    if summary.get("message"):
        lines.append(f"  {summary['message']}")
    for warning in summary.get("warnings") or ():
        lines.append(f"  WARNING: {warning}")
    lines.append(f"  files in {summary['out']}")
    return "\n".join(lines)


class RunLog:
    """The records of the run in ``out``: ``steps.jsonl``, ``metrics.jsonl``, ``summary.json``.

    Parameters
    ----------
    out : Path of the run directory
    config : the run's validated :class:`~tucker_ref.training.config.TrainConfig`
    train_set, test_set, validation_set : the data of the run (``validation_set``: ``None``
        without ``--validation``)
    data_fingerprint : str (:func:`~tucker_ref.training.trainer.data_fingerprint`)
    initial_ranks : the ranks the run started at (:func:`~tucker_ref.training.metrics.ranks_of`)
    steps_per_epoch : int
    """

    def __init__(self, out: Path, config, *, train_set, test_set, validation_set, data_fingerprint: str,
                 initial_ranks, steps_per_epoch: int):
        self.out = out
        self.config = config
        self.train_set, self.test_set, self.validation_set = train_set, test_set, validation_set
        self.data_fingerprint = data_fingerprint
        self.initial_ranks = initial_ranks
        self.steps_per_epoch = steps_per_epoch
        self.steps_path = out / "steps.jsonl"
        self.metrics_path = out / "metrics.jsonl"
        self.partial_record = False

    def resume_at(self, step: int, mid_epoch: bool) -> None:
        """Drop the lines logged after the checkpoint at ``step`` by the interrupted run.

        A partial epoch record (of a ``--max-steps`` stop) is replaced by the record of the
        continued epoch; it stays while this run has not finished that epoch (``mid_epoch``),
        so that a resume that stops at once reports what the interrupted run did.
        """
        self.partial_record = mid_epoch
        keep_jsonl(self.steps_path, lambda r: r["step"] <= step)
        keep_jsonl(self.metrics_path, lambda r: r["step"] <= step and (not r["partial"] or r["step"] == step))

    def step(self, record: dict) -> None:
        """Append a step's record to ``steps.jsonl``."""
        append_jsonl(self.steps_path, record)

    def epoch(self, model, state, test: tuple[float, float], epoch_time: float, partial: bool,
              eval_started: float) -> dict:
        """Append the record of the epoch that ``state`` is in to ``metrics.jsonl`` and return it.

        ``test`` is the ``(loss, accuracy)`` on the test set, whose evaluation began at
        ``time.perf_counter() == eval_started``; ``partial``: the epoch was cut short.
        """
        report = parameter_report(model)
        seen = max(state.sums["seen"], 1)
        record = {
            "epoch": state.epoch + 1, "step": state.step, "partial": partial,
            "train_loss": state.sums["loss"] / seen, "train_accuracy": state.sums["correct"] / seen,
            "test_loss": test[0], "test_accuracy": test[1],
            **self.validation_metrics(model),
            "ranks": ranks_of(model),
            "layer_params": {n: layer["stored"] for n, layer in report["layers"].items()},
            "weights": report["weights"], "params": report["params"],
            "conv_compression": report["conv_compression"], "network_compression": report["network_compression"],
            "epoch_time_s": epoch_time, "eval_time_s": time.perf_counter() - eval_started,
            "elapsed_s": state.train_time,
        }
        if self.partial_record:
            keep_jsonl(self.metrics_path, lambda r: not r["partial"])
            self.partial_record = False
        append_jsonl(self.metrics_path, record)
        return record

    def validation_metrics(self, model) -> dict:
        """``validation_loss``, ``validation_accuracy`` on the ``--validation`` split (empty without one)."""
        if self.validation_set is None:
            return {}
        loss, acc = evaluate(model, self.validation_set)
        return {"validation_loss": loss, "validation_accuracy": acc}

    def summary(self, model, state, status: str, message) -> dict:
        """Write ``summary.json`` and return it; ``status``: ``"completed"``, ``"max_steps"``, ``"diverged"``.

        It is made from the model and ``metrics.jsonl`` (the records of every invocation of
        the run, so that a resumed run reports what an uninterrupted one does)."""
        c = self.config
        records = read_jsonl(self.metrics_path)
        last = records[-1] if records else None
        if last is None or last["step"] != state.step:
            test_loss, test_acc = evaluate(model, self.test_set) if status != "diverged" else (None, None)
            validation = self.validation_metrics(model) if status != "diverged" else {}
        else:
            test_loss, test_acc = last["test_loss"], last["test_accuracy"]
            validation = {k: last[k] for k in ("validation_loss", "validation_accuracy") if k in last}
        epoch_times = [r["epoch_time_s"] for r in records if not r["partial"]]
        steps_done = len(epoch_times) * self.steps_per_epoch
        report = parameter_report(model)
        chance = chance_level(self.test_set.labels, test_acc)
        warnings = []
        if chance["at_chance"]:
            warnings.append(
                f"final test accuracy {100 * test_acc:.2f}% is at chance level (at most "
                f"{100 * chance['threshold']:.2f}%: always answering the most frequent digit scores "
                f"{100 * chance['majority_accuracy']:.2f}% on these {chance['test_images']} test images); the "
                "network did not learn: train longer, or lower --lr")
        summary = {
            "status": status,
            "method": c.method,
            "args": c.to_dict(),
            "dataset": self.train_set.description,
            "test_set": self.test_set.description,
            "data_fingerprint": self.data_fingerprint,
            "out": str(self.out),
            "validation_set": None if self.validation_set is None else self.validation_set.description,
            "final": {"test_accuracy": test_acc, "test_loss": test_loss, **validation,
                      "train_loss": None if last is None else last["train_loss"]},
            "initial_ranks": self.initial_ranks,
            "ranks": ranks_of(model),
            "compression": {"conv": report["conv_compression"], "network": report["network_compression"]},
            "parameters": report,
            "epochs_completed": state.epoch,
            "steps": state.step,
            "time_per_epoch_s": float(np.mean(epoch_times)) if epoch_times else None,
            "time_per_step_s": sum(epoch_times) / steps_done if steps_done else None,
            "chance_level": chance,
            "warnings": warnings,
            "message": message,
        }
        if c.plots and status != "diverged":
            from .plots import plot_run

            summary["plots"] = [p.name for p in plot_run(self.out, core_spectra(model))]
        write_json(self.out / "summary.json", summary)
        return summary
