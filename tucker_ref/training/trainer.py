"""The training loop: LeNet5 on MNIST with TDLRT or a baseline, logs, checkpoints, plots.

:func:`train` runs one configuration (:class:`~tucker_ref.training.config.TrainConfig`) and
writes into ``config.out``:

``steps.jsonl`` — one record per step:
    ``step`` (1-based, global), ``epoch`` (1-based), ``loss`` (mini-batch loss *before* the
    step), ``accuracy`` (mini-batch accuracy before the step), ``lr`` (the schedule's value
    at this step), ``ranks`` (``{layer: [r_1, …]}`` after the step, factorized layers only;
    inside an open TDLRT cycle the augmented ranks), ``layers`` (``{layer:
    StepReport.to_dict()}`` for the integrator methods: ranks before/augmented/after,
    clamps, tails, ``eta``, ``threshold``, ``proj_grad_norm`` = ‖Π∇L‖, ``s_steps``;
    ``epsilon``, ``tangent_grad_norm`` and ``residual_norm`` only with ``--diagnostics``, as
    they need the dense kernel gradient; on a batch inside a TDLRT cycle of ``--s-steps K >
    1`` that does not close it, ``{"phase", "s_steps", "ranks_before", "ranks_augmented"}``
    instead), ``time_s`` (wall time of the step), and with
    ``--check-descent`` a ``descent`` record (see :func:`descent_record`).
``metrics.jsonl`` — one record per epoch:
    ``epoch``, ``step``, ``partial`` (an epoch cut short by ``--max-steps``), ``train_loss`` and
    ``train_accuracy`` (means over the epoch's mini-batches, each measured before its step),
    ``test_loss``, ``test_accuracy``, with ``--validation`` ``validation_loss`` and
    ``validation_accuracy``, ``ranks``, ``layer_params`` (stored weights per layer),
    ``weights``, ``params`` (weights + biases), ``conv_compression``, ``network_compression``
    (:mod:`~tucker_ref.training.metrics`: weights only, biases excluded), ``epoch_time_s``
    (training steps), ``eval_time_s``, ``elapsed_s`` (training time since the start of the run).
``summary.json`` — at the end (also on divergence): ``status`` (``"completed"``,
    ``"max_steps"``, ``"diverged"``), ``method``, ``args`` (every setting, the new ones of the
    cycle and the optimizers included), ``dataset``, ``validation_set``, ``data_fingerprint``
    (:func:`data_fingerprint`), ``final`` (test accuracy and loss, with ``--validation`` the
    validation accuracy and loss, last train loss), ``initial_ranks`` (the ranks the run
    started at), ``ranks``,
    ``compression`` (conv, network), ``parameters`` (the full
    :func:`~tucker_ref.training.metrics.parameter_report`), ``epochs_completed``, ``steps``,
    ``time_per_epoch_s``, ``time_per_step_s``, ``chance_level`` (:func:`chance_level`, with
    ``at_chance``: the final test accuracy is no better than always answering the most frequent
    digit), ``warnings`` (a list of sentences; one when the run ends at chance level), ``message``.
    ``final`` and the times are taken from ``metrics.jsonl``, so a resumed run (even one resumed
    after its last checkpoint) has the same fields as an uninterrupted one.
``checkpoint.json`` + ``checkpoint-<step>.npz`` — after every epoch (and when ``--max-steps``
    stops the run): parameters, optimizer state, the mini-batch RNG state, counters, the data
    fingerprint (:mod:`~tucker_ref.training.runstate`; fields :data:`CHECKPOINT_FIELDS`).
    ``--resume`` checks the checkpoint (checksum, schema, counters) and that the data are those
    it was trained on, then continues bit for bit.
``curves.png``, ``ranks.png``, ``core_spectra.png`` — unless ``--no-plots``.

The run directory belongs to one run at a time (:mod:`~tucker_ref.training.rundir`): a second
run into the same ``out`` fails at once, naming the holder; a fresh run refuses a directory
holding files it did not write (unless ``overwrite``); a start that fails (bad data, a
checkpoint that fails its checks) leaves nothing behind; the directory is checked writable
before the first step. Every whole-file write is atomic
(:func:`~tucker_ref.training.runfiles.write_atomic`).

Reproducibility: the initialization comes from ``seed`` (:func:`tucker_ref.nn.models.lenet5`,
children 0 and 1 of ``SeedSequence(seed)``), the mini-batch order from child 2. The
permutation of an epoch is drawn at its start from that generator; a checkpoint stores the
generator state at the start of the current epoch and the number of mini-batches done, so a
resumed run redraws the same permutation and skips what was done
(:class:`~tucker_ref.training.runstate.RunState`).

Divergence: a non-finite loss, gradient or parameter stops the run with
:class:`TrainingDiverged` before anything else is written; the last checkpoint (the end of
the last good epoch) is left untouched.

Data: an empty split, non-finite pixels, a ``--train-subset`` / ``--test-subset`` larger than
the split and a ``--validation`` split that leaves no training image are refused before the
model is built (``ValueError`` naming the data).

Code: this module sets a run up (data, model) and runs its loop (:func:`train`); each
method's update rule and what the loop needs to know of it are in
:mod:`~tucker_ref.training.methods`, the run's state and checkpoint in
:mod:`~tucker_ref.training.runstate`, the records and the summary in
:mod:`~tucker_ref.training.records`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np

from ..data import check_split, iterate_minibatches, load_dataset, stratified_split
from ..integrators.optim import LR_SCHEDULES
from ..nn.functional import softmax_cross_entropy
from ..nn.models import LENET5_WEIGHT_SHAPES, lenet5
from ..truncation import feasible_ranks, rank_from_fraction
from ..tucker import TuckerTensor
from . import checkpoint as ckpt
from .config import FACTORIZED_METHODS, METHOD_SPECS, TrainConfig
from .methods import RULES, adaptive_modes_for, make_update_rule, plain_gradient_keys
from .metrics import accuracy, ranks_of
from .progress import ProgressLine
from .records import (CHANCE_Z, EVAL_BATCH_SIZE, RunLog, chance_level, descent_record, evaluate,
                      format_summary)
from .rundir import RunDirectory
from .runstate import (CHECKPOINT_FIELDS, CHECKPOINT_SUMS_FIELDS, PER_INVOCATION, RESUMABLE_OVERRIDES, RunState,
                       StoredRun, save_run_checkpoint)
from .runtime import raise_malloc_thresholds

__all__ = [
    "EVAL_BATCH_SIZE", "SUBSET_SEED", "VALIDATION_SEED", "PER_INVOCATION", "RESUMABLE_OVERRIDES", "CHECKPOINT_FIELDS",
    "CHECKPOINT_SUMS_FIELDS", "CHANCE_Z", "TrainingDiverged", "initial_ranks", "build_model", "load_dense_model",
    "validation_split", "load_data", "data_fingerprint", "chance_level", "evaluate", "descent_record",
    "format_summary", "train",
]

#: Seed of the choice of ``--train-subset`` / ``--test-subset`` examples: fixed, so that runs
#: with different ``--seed`` see the same examples.
SUBSET_SEED = 0
#: Seed of the stratified choice of the ``--validation`` images (fixed for every ``--seed``).
VALIDATION_SEED = 1


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or parameter; the message says which, where and when."""


# ---------------------------------------------------------------------------------------
# model, data
# ---------------------------------------------------------------------------------------
def initial_ranks(config: TrainConfig) -> dict | None:
    """Initial ranks ``{layer: tuple}`` of the factorized layers (``None`` for ``full``).

    Frozen (non-adaptive) modes start and stay at full rank. On adaptive modes a fraction
    ``f`` gives ``max(1, ⌈f n_i⌉)``, an integer ``r`` gives ``min(r, n_i)``, ``None`` (the
    ``tdlrt`` default) gives ``n_i``; these are then capped by the method's
    :meth:`~tucker_ref.training.methods.UpdateRule.initial_rank_caps` (for ``tdlrt`` ``rmax`` /
    ``rmax_fraction``, :func:`~tucker_ref.training.methods.rank_bounds`). Explicit per-layer
    ranks are used as given (layers not named use the method's
    :attr:`~tucker_ref.training.config.MethodSpec.default_init_rank`). The result is made
    feasible (``r_i ≤ ∏_{j≠i} r_j``).
    """
    if config.method not in FACTORIZED_METHODS:
        return None
    rule_class = RULES[config.method]
    default = METHOD_SPECS[config.method].default_init_rank
    out = {}
    for name in ("conv1", "conv2", "fc1"):
        shape = LENET5_WEIGHT_SHAPES[name]
        spec = config.init_rank
        if isinstance(spec, dict):
            if name in spec:
                out[name] = tuple(spec[name])
                continue
            spec = default
        adaptive = adaptive_modes_for(len(shape), config.adaptive_modes)
        caps = rule_class.initial_rank_caps(shape, config)
        ranks = []
        for i, n in enumerate(shape):
            if i not in adaptive:
                ranks.append(n)
                continue
            if spec is None:
                r = n
            elif isinstance(spec, float):
                r = rank_from_fraction(spec, n)
            else:
                r = min(int(spec), n)
            ranks.append(r if caps[i] is None else min(r, caps[i]))
        out[name] = feasible_ranks(ranks)
    if isinstance(config.init_rank, dict):
        unknown = set(config.init_rank) - set(out)
        if unknown:
            raise ValueError(f"init_rank names layers {sorted(unknown)}; the factorized layers are conv1, conv2, fc1")
    return out


def build_model(config: TrainConfig):
    """The initial LeNet5 of a run.

    ``full``: the dense LeNet5 (PyTorch default init, ``seed``). Factorized methods: conv1,
    conv2 Tucker and fc1 low-rank, each the HOSVD at :func:`initial_ranks` of the same dense
    initialization (computed in float64, then cast to ``config.dtype``); biases and fc2 are
    the dense model's. With ``init_from`` every parameter comes from that ``full`` run's last
    checkpoint (:func:`load_dense_model`), the factorized layers by ST-HOSVD of its kernels at
    :func:`initial_ranks` (decompose-then-finetune; no rescaling).
    """
    dtype = np.dtype(config.dtype)
    if config.init_from is not None:
        dense = load_dense_model(config.init_from)
        if config.method not in FACTORIZED_METHODS:
            return lenet5(from_dense=dense, dtype=dtype)
        return lenet5(tucker_conv=True, low_rank_dense=True, ranks=initial_ranks(config), from_dense=dense,
                      sequential=True, dtype=dtype)
    if config.method not in FACTORIZED_METHODS:
        return lenet5(dtype=dtype, seed=config.seed)
    dense = lenet5(dtype=np.float64, seed=config.seed)
    model = lenet5(tucker_conv=True, low_rank_dense=True, ranks=initial_ranks(config), from_dense=dense,
                   dtype=dtype)
    for name, layer in model.tucker_layers().items():
        T = layer.weight
        scale = np.linalg.norm(dense[name].weight) / np.linalg.norm(T.core.astype(np.float64))
        layer.weight = TuckerTensor(T.core * dtype.type(scale), T.factors)
    return model


def load_dense_model(run_dir):
    """The dense LeNet5 (float64) of the last checkpoint of a ``--method full`` run in ``run_dir``."""
    arrays, meta = ckpt.load_checkpoint(Path(run_dir))
    method = meta.get("config", {}).get("method")
    if method != "full":
        raise ValueError(f"init_from must name a run of --method full, {run_dir} holds a {method!r} run")
    model = lenet5(dtype=np.dtype(meta["config"]["dtype"]))
    ckpt.load_model_state(model, arrays)
    return model


def validation_split(train, n: int):
    """``(train', validation)``: ``n`` images of ``train`` set aside, stratified by digit (seed
    :data:`VALIDATION_SEED`, the same for every ``--seed``), to choose settings on.

    ``ValueError`` when ``n`` would leave no training image."""
    if n >= len(train):
        raise ValueError(f"--validation {n} sets aside all {len(train)} training images of {train.description}; "
                         f"pass at most {len(train) - 1}")
    keep, held = stratified_split(train.labels, n, np.random.default_rng(VALIDATION_SEED))
    rest = dataclasses.replace(train.subset(keep),
                               description=f"{train.description}; {len(held)} of them set aside for validation")
    val = dataclasses.replace(train.subset(held), name=train.name.replace("train", "validation"),
                              description=f"validation split: {len(held)} images of {train.description}")
    return rest, val


def load_data(config: TrainConfig):
    """``(train, test)`` for ``config.data`` in ``config.dtype``, cut to the requested subsets.

    A subset is a uniformly drawn set of examples (seed :data:`SUBSET_SEED`, kept in the
    dataset's order): the embedded subset is sorted by digit, so the first ``N`` would be
    all zeros. ``ValueError`` (naming the data) for an empty split, non-finite pixels
    (:func:`~tucker_ref.data.check_split`) or a subset larger than its split.
    """
    kwargs = {"dtype": np.dtype(config.dtype)}
    train, test = load_dataset(config.data, **kwargs)
    for role, split, subset in (("train", train, config.train_subset), ("test", test, config.test_subset)):
        check_split(split, "training" if role == "train" else role)
        if subset is not None and subset > len(split):
            raise ValueError(f"--{role}-subset {subset} is larger than the {len(split)} images of the {role} split "
                             f"({split.description}); pass at most {len(split)}, or leave it out to use them all")
    rng = np.random.default_rng(SUBSET_SEED)
    if config.train_subset is not None and config.train_subset < len(train):
        train = train.subset(np.sort(rng.permutation(len(train))[: config.train_subset]))
    if config.test_subset is not None and config.test_subset < len(test):
        test = test.subset(np.sort(rng.permutation(len(test))[: config.test_subset]))
    return train, test


def data_fingerprint(train, test, validation=None) -> str:
    """Hex SHA-256 of the data a run trains and is evaluated on: the
    :meth:`~tucker_ref.data.Dataset.fingerprint` of each split (after the subsets and the
    validation split), by role. A checkpoint records it and ``--resume`` requires it unchanged."""
    parts = [f"train:{train.fingerprint()}", f"test:{test.fingerprint()}"]
    if validation is not None:
        parts.append(f"validation:{validation.fingerprint()}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def train(config: TrainConfig, *, explicit=None, stream=None) -> dict:
    """Run (or, with ``config.resume``, continue) one training; return the summary dict.

    Parameters
    ----------
    config : TrainConfig (validated here)
    explicit : iterable of str, optional
        Names of the settings the user gave explicitly (the CLI passes them); default: the
        settings that differ from :class:`TrainConfig`'s defaults. On resume, explicit
        :data:`RESUMABLE_OVERRIDES` replace the checkpoint's values, :data:`PER_INVOCATION`
        settings always come from ``config``, and any other explicit setting must agree with
        the checkpoint (``ValueError`` listing the differences).
    stream : file for the progress line (default stderr)

    Raises
    ------
    TrainingDiverged
        After writing ``summary.json`` with ``status = "diverged"``; checkpoint untouched.
    RunDirectoryBusy
        Another process holds ``config.out`` (:mod:`~tucker_ref.training.rundir`).
    FileExistsError, FileNotFoundError, NotADirectoryError
        A fresh run into a directory holding files it did not write; a resume without a
        checkpoint; an ``out`` that is a file.
    CheckpointError
        On resume, a ``checkpoint.json`` or array file that fails its checks, or data that
        differ from those the checkpoint was trained on (a ``ValueError``).
    OSError
        A file cannot be written (the message names it).
    """
    if explicit is None:
        default = TrainConfig()
        explicit = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(default, f.name)]
    config = config.validated()
    raise_malloc_thresholds()  # fewer page faults per step; values unchanged (docs/training.md)
    with RunDirectory(config.out, resume=config.resume, overwrite=config.overwrite) as run_dir:
        return _Run(config, frozenset(explicit), stream, run_dir).run()


@contextlib.contextmanager
def _overflow_is_divergence(where: str, invalid: bool = False):
    """Turn a floating-point overflow (and, if ``invalid``, an invalid operation such as
    ``inf − inf``) inside the block into :class:`TrainingDiverged`.

    Activations of a diverging network overflow before the loss turns non-finite, and the
    layers reject non-finite input with a ``ValueError``; raising at the first overflow names
    the real cause. Underflow is harmless and stays ignored.
    """
    with np.errstate(over="raise", invalid="raise" if invalid else "warn"):
        try:
            yield
        except FloatingPointError as exc:
            raise TrainingDiverged(f"{exc} in {where}") from None


class _Run:
    """One invocation of a run: its setup (fresh, or from the checkpoint), then its epochs."""

    def __init__(self, config: TrainConfig, explicit: frozenset, stream, run_dir: RunDirectory):
        self.out = run_dir.path
        stored = StoredRun(self.out) if config.resume else None
        if stored is not None:
            config = stored.resumed_config(config, explicit)
        self.config = config
        self.stream = sys.stderr if stream is None else stream
        self.train_set, self.test_set = load_data(config)
        validation_set = None
        if config.validation:
            self.train_set, validation_set = validation_split(self.train_set, config.validation)
        self.data_fingerprint = data_fingerprint(self.train_set, self.test_set, validation_set)
        self.model = build_model(config)
        initial = ranks_of(self.model)
        self.rule = make_update_rule(config)
        self.steps_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        self.lr_at = LR_SCHEDULES[config.lr_schedule](config.lr, config.epochs * self.steps_per_epoch)
        if stored is None:
            self.state = RunState.fresh(config.seed)
        else:
            self.state = stored.restore(self.model, self.rule, self.steps_per_epoch, self.data_fingerprint,
                                        config.data)
        self.log = RunLog(self.out, config, train_set=self.train_set, test_set=self.test_set,
                          validation_set=validation_set, data_fingerprint=self.data_fingerprint,
                          initial_ranks=initial, steps_per_epoch=self.steps_per_epoch)
        run_dir.check_writable([self.log.steps_path, self.log.metrics_path])
        # Everything is checked: from here on the run writes.
        run_dir.started()
        if stored is not None:
            stored.discard_stale_arrays()
            self.log.resume_at(self.state.step, mid_epoch=bool(self.state.batch_in_epoch))
        self.checkpoint_step = None if stored is None else self.state.step

    def run(self) -> dict:
        c, s = self.config, self.state
        progress = ProgressLine(self.steps_per_epoch, stream=self.stream, enabled=not c.quiet)
        status, message = "completed", None
        try:
            while s.epoch < c.epochs:
                if self._max_steps_reached(s.step):
                    status = "max_steps"
                    break
                epoch_start = time.perf_counter()
                for b, (x, y) in enumerate(iterate_minibatches(self.train_set, c.batch_size, s.rng)):
                    if b < s.batch_in_epoch:
                        continue
                    last = b + 1 == self.steps_per_epoch or self._max_steps_reached(s.step + 1)
                    record = self._train_step(x, y, close_cycle=last)
                    s.batch_in_epoch = b + 1
                    if s.batch_in_epoch % c.log_every == 0 or s.batch_in_epoch == self.steps_per_epoch:
                        progress.update(s.batch_in_epoch, self._progress_text(record["ranks"]))
                    if self._max_steps_reached(s.step):
                        break
                if self._end_epoch(time.perf_counter() - epoch_start, progress):
                    status = "max_steps"
                    break
        except TrainingDiverged as exc:
            progress.finish()
            kept = ("no checkpoint had been written yet" if self.checkpoint_step is None else
                    f"the last good checkpoint (step {self.checkpoint_step}) was kept unchanged")
            message = f"training diverged: {exc}; {kept}. Lower --lr."
            self.log.summary(self.model, s, "diverged", message)
            raise TrainingDiverged(message) from None
        return self.log.summary(self.model, s, status, message)

    def _max_steps_reached(self, step: int) -> bool:
        return self.config.max_steps is not None and step >= self.config.max_steps

    def _end_epoch(self, spent: float, progress: ProgressLine) -> bool:
        """Log the epoch, move on if it is complete, commit a checkpoint; ``True`` if it was cut short."""
        s = self.state
        s.train_time += spent
        # the whole epoch's time, also when it was resumed in the middle
        epoch_time = s.epoch_time_before + spent
        partial = s.batch_in_epoch < self.steps_per_epoch
        eval_started = time.perf_counter()
        with _overflow_is_divergence(f"the evaluation after step {s.step}", invalid=True):
            test = evaluate(self.model, self.test_set)
        record = self.log.epoch(self.model, s, test, epoch_time, partial, eval_started)
        progress.finish(self._progress_text(record["ranks"]) + f" | test acc {100 * record['test_accuracy']:.2f}%")
        if partial:
            s.epoch_time_before = epoch_time
        else:
            s.next_epoch()
        save_run_checkpoint(self.out, s, self.model, self.rule, self.config, self.data_fingerprint)
        self.checkpoint_step = s.step
        return partial

    def _progress_text(self, ranks: dict) -> str:
        s = self.state
        seen = max(s.sums["seen"], 1)
        shown = " ".join(f"{n} {'x'.join(map(str, r))}" for n, r in ranks.items())
        return (f"epoch {s.epoch + 1}/{self.config.epochs} loss {s.sums['loss'] / seen:.4f} "
                f"acc {100 * s.sums['correct'] / seen:.1f}%" + (f" ranks {shown}" if shown else ""))

    # -- one step ----------------------------------------------------------------------
    def _train_step(self, x, y, close_cycle: bool) -> dict:
        check_descent = self.config.check_descent
        start = time.perf_counter()
        loss, logits = self._forward_backward(x, y)
        lr = self.lr_at(self.state.step)
        record = {"step": self.state.step + 1, "epoch": self.state.epoch + 1, "loss": loss,
                  "accuracy": accuracy(logits, y), "lr": lr}
        if check_descent:
            grad_norm_before = self._gradient_norm()
            plain_sq = self._plain_gradient_sq()
        with _overflow_is_divergence(f"the update of {self._where()}"):
            reports = self.rule.step(self.model, lr, lambda: self._forward_backward(x, y), close_cycle)
        self._check_parameters()
        record["ranks"] = ranks_of(self.model)
        record["layers"] = reports
        if check_descent:
            loss_after, _ = self._forward_backward(x, y)
            proj_sq, eta = self.rule.descent_terms(reports, plain_sq)
            record["descent"] = descent_record(loss, loss_after, lr, proj_sq, eta, grad_norm_before,
                                               self._gradient_norm())
        record["time_s"] = time.perf_counter() - start
        self.state.count_batch(loss, record["accuracy"], len(y))
        self.log.step(record)
        return record

    def _where(self) -> str:
        return f"step {self.state.step + 1} (epoch {self.state.epoch + 1})"

    def _forward_backward(self, x, y):
        """Loss and logits of the batch at the current parameters, gradients in the layers."""
        with _overflow_is_divergence(f"forward/backward pass of {self._where()}", invalid=True):
            logits = self.model.forward(x)
            loss, dlogits = softmax_cross_entropy(logits, y)
            if not np.isfinite(loss):
                raise TrainingDiverged(f"loss is {float(loss)} at {self._where()}")
            self.model.backward(dlogits, need_dx=False)
            # Only the gradients the update reads: the integrators take the factorized layers'
            # gradients from their oracles (which reject NaN/Inf), so their Euclidean core and
            # factor gradients are never computed.
            grads = self.model.grads
            for key in self.rule.gradient_keys(self.model, grads):
                if not np.all(np.isfinite(grads[key])):
                    raise TrainingDiverged(f"gradient of {key} has NaN/Inf entries at {self._where()} "
                                           f"(loss {float(loss):.4g})")
        return float(loss), logits

    def _check_parameters(self) -> None:
        for key, p in self.model.parameters().items():
            if not np.all(np.isfinite(p)):
                raise TrainingDiverged(f"parameter {key} became non-finite in {self._where()}")

    def _plain_gradient_sq(self) -> float:
        """``Σ ‖g‖²`` over the parameters outside the factorized weights (biases, dense layers)."""
        grads = self.model.grads
        return sum(float(np.sum(grads[k].astype(np.float64) ** 2)) for k in plain_gradient_keys(self.model, grads))

    def _gradient_norm(self) -> float:
        """``‖∇L‖`` over all parameters, dense kernel gradients for the factorized layers."""
        layers = self.model.tucker_layers().values()
        total = sum(float(np.sum(layer.gradient_oracle().dense_gradient().astype(np.float64) ** 2)) for layer in layers)
        return math.sqrt(total + self._plain_gradient_sq())
