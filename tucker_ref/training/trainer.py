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
    fingerprint (:mod:`~tucker_ref.training.checkpoint`; fields :data:`CHECKPOINT_FIELDS`).
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
resumed run redraws the same permutation and skips what was done.

Divergence: a non-finite loss, gradient or parameter stops the run with
:class:`TrainingDiverged` before anything else is written; the last checkpoint (the end of
the last good epoch) is left untouched.

Data: an empty split, non-finite pixels, a ``--train-subset`` / ``--test-subset`` larger than
the split and a ``--validation`` split that leaves no training image are refused before the
model is built (``ValueError`` naming the data).
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
from .config import DEFAULT_INIT_RANK, FACTORIZED_METHODS, TrainConfig
from .methods import adaptive_modes_for, make_update_rule, plain_gradient_keys, rank_bounds
from .metrics import accuracy, core_spectra, parameter_report, ranks_of
from .progress import ProgressLine
from .rundir import RunDirectory
from .runfiles import append_jsonl, keep_jsonl, read_jsonl, write_json

#: Mini-batch size of the evaluation passes (memory bound: the im2col of conv2 at 500 images
#: is 16M entries).
EVAL_BATCH_SIZE = 500
#: Seed of the choice of ``--train-subset`` / ``--test-subset`` examples: fixed, so that runs
#: with different ``--seed`` see the same examples.
SUBSET_SEED = 0
#: Seed of the stratified choice of the ``--validation`` images (fixed for every ``--seed``).
VALIDATION_SEED = 1
#: Settings of one invocation: a resumed run takes them from its own arguments, never from the
#: checkpoint (``max_steps`` stops this invocation only; a resume without it runs to ``epochs``).
PER_INVOCATION = ("max_steps", "log_every", "quiet", "plots", "overwrite")
#: Settings that a resumed run may change when given explicitly; every other setting comes
#: from the checkpoint. Changing ``lr`` (e.g. to continue a diverged run from its last good
#: checkpoint with a smaller one) of course ends the bit-identity with the original run.
RESUMABLE_OVERRIDES = ("epochs", "lr")
#: Fields of a training checkpoint's ``checkpoint.json`` besides the reserved ones, with their
#: kinds (:func:`~tucker_ref.training.checkpoint.check_fields`; ``?``: absent in checkpoints
#: written before the field existed, which resume without that check).
CHECKPOINT_FIELDS = {"step": "count", "epoch": "count", "batch_in_epoch": "count", "epoch_rng_state": "object",
                     "sums": "object", "train_time_s": "number", "epoch_time_s": "number?", "config": "object",
                     "ranks": "object", "data_fingerprint": "string?"}
#: Fields of ``sums`` (the running sums of the current epoch) in a checkpoint.
CHECKPOINT_SUMS_FIELDS = {"loss": "number", "correct": "count", "seen": "count"}
#: Standard errors of the majority-digit rate that a final test accuracy must exceed not to
#: count as chance level (:func:`chance_level`): 3 keeps a collapsed network (one digit for
#: every image) from passing by luck on a test set of a few hundred images.
CHANCE_Z = 3.0


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or parameter; the message says which, where and when."""


# ---------------------------------------------------------------------------------------
# model, data, evaluation
# ---------------------------------------------------------------------------------------
def initial_ranks(config: TrainConfig) -> dict | None:
    """Initial ranks ``{layer: tuple}`` of the factorized layers (``None`` for ``full``).

    Frozen (non-adaptive) modes start and stay at full rank. On adaptive modes a fraction
    ``f`` gives ``max(1, ⌈f n_i⌉)``, an integer ``r`` gives ``min(r, n_i)``, ``None`` (the
    ``tdlrt`` default) gives ``n_i``; for ``tdlrt`` these are then capped by ``rmax`` /
    ``rmax_fraction`` (:func:`~tucker_ref.training.methods.rank_bounds`). Explicit per-layer
    ranks are used as given (layers not named use the default). The result is made feasible
    (``r_i ≤ ∏_{j≠i} r_j``).
    """
    if config.method not in FACTORIZED_METHODS:
        return None
    default = None if config.method == "tdlrt" else DEFAULT_INIT_RANK
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
        caps = rank_bounds(shape, config)[1] if config.method == "tdlrt" else [None] * len(shape)
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


def evaluate(model, dataset, batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset`` (forward passes only)."""
    loss_sum, correct = 0.0, 0
    for x, y in iterate_minibatches(dataset, batch_size, None):
        logits = model.forward(x)
        loss, _ = softmax_cross_entropy(logits, y)
        loss_sum += float(loss) * len(y)
        correct += int(np.sum(np.argmax(logits, axis=1) == y))
    return loss_sum / len(dataset), correct / len(dataset)


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
    (``naive-tucker``, ``fixed-rank``, ``riemannian``).
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
    initial = summary.get("initial_ranks") or {}
    if summary["method"] == "tdlrt" and initial:
        start = "a full-rank start" if args.get("init_rank") is None and args.get("rmax_fraction") is None else \
            "the initial ranks"
        lines.append(f"  ranks found by tau = {args.get('tau')} from {start} (initial -> final):")
    for name, ranks in (summary.get("ranks") or {}).items():
        before = f"{tuple(initial[name])} -> " if summary["method"] == "tdlrt" and name in initial else ""
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
    def __init__(self, config: TrainConfig, explicit: frozenset, stream, run_dir: RunDirectory):
        self.run_dir = run_dir
        self.out = run_dir.path
        self.stream = sys.stderr if stream is None else stream
        self.steps_path = self.out / "steps.jsonl"
        self.metrics_path = self.out / "metrics.jsonl"
        self.checkpoint_path = self.out / ckpt.CHECKPOINT_JSON
        if config.resume:
            arrays, meta = ckpt.load_checkpoint(self.out)
            ckpt.check_fields(meta, CHECKPOINT_FIELDS, self.checkpoint_path)
            ckpt.check_fields(meta["sums"], CHECKPOINT_SUMS_FIELDS, f"{self.checkpoint_path} (field 'sums')")
            config = self._resumed_config(config, explicit, meta, self.checkpoint_path)
        self.config = config
        self.train_set, self.test_set = load_data(config)
        self.validation_set = None
        if config.validation:
            self.train_set, self.validation_set = validation_split(self.train_set, config.validation)
        self.data_fingerprint = data_fingerprint(self.train_set, self.test_set, self.validation_set)
        self.model = build_model(config)
        self.initial_ranks = ranks_of(self.model)
        self.rule = make_update_rule(config)
        self.steps_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        self.lr_at = LR_SCHEDULES[config.lr_schedule](config.lr, config.epochs * self.steps_per_epoch)
        if config.resume:
            self._restore(arrays, meta)
        else:
            self.rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[2])
            self.epoch_rng_state = ckpt.rng_state(self.rng)
            self.step = self.epoch = self.batch_in_epoch = 0
            self.sums = {"loss": 0.0, "correct": 0, "seen": 0}
            self.train_time = 0.0
            self.epoch_time_before = 0.0
        self.run_dir.check_writable([self.steps_path, self.metrics_path])
        # Everything is checked: from here on the run writes.
        self.run_dir.started()
        # A partial epoch record (of a --max-steps stop) is replaced by the record of the
        # continued epoch; it stays while this run has not finished that epoch, so that a
        # resume that stops at once reports what the interrupted run did.
        self.partial_record = bool(config.resume and self.batch_in_epoch)
        if config.resume:
            # Arrays of a write that was cut before or after its commit go, and so do lines
            # logged after the checkpoint by the interrupted run.
            for stale in ckpt.stale_array_files(self.out):
                stale.unlink(missing_ok=True)
            keep_jsonl(self.steps_path, lambda r: r["step"] <= self.step)
            keep_jsonl(self.metrics_path, lambda r: r["step"] <= self.step
                       and (not r["partial"] or r["step"] == self.step))
        self.checkpoint_step = self.step if config.resume else None

    # -- resume ------------------------------------------------------------------------
    @staticmethod
    def _resumed_config(config: TrainConfig, explicit: frozenset, meta: dict, source) -> TrainConfig:
        try:
            saved = TrainConfig.from_dict(meta["config"]).validated()
        except (TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{source}: field 'config' holds no valid settings ({exc}); restore the run "
                                       "directory from a copy, or start the run over with --overwrite") from None
        fixed = explicit - set(RESUMABLE_OVERRIDES) - set(PER_INVOCATION) - {"resume", "out"}
        conflicts = [f"{name}: given {getattr(config, name)!r}, checkpoint has {getattr(saved, name)!r}"
                     for name in sorted(fixed) if getattr(config, name) != getattr(saved, name)]
        if conflicts:
            raise ValueError("a resumed run continues with the settings of its checkpoint; these differ: "
                             + "; ".join(conflicts))
        overrides = {k: getattr(config, k) for k in RESUMABLE_OVERRIDES if k in explicit}
        overrides.update({k: getattr(config, k) for k in PER_INVOCATION})
        return dataclasses.replace(saved, resume=True, out=config.out, **overrides)

    def _restore(self, arrays: dict, meta: dict) -> None:
        """Check the checkpoint against this run's data and put its state in place (no writes)."""
        source = self.checkpoint_path
        recorded = meta.get("data_fingerprint")
        if recorded is not None and recorded != self.data_fingerprint:
            raise ckpt.CheckpointError(
                f"{source}: the data differ from those this run was trained on (fingerprint {recorded[:12]}… "
                f"recorded, {self.data_fingerprint[:12]}… from --data {self.config.data} now); resume with the "
                "original data, or start a new run in another --out")
        step, epoch, batch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if batch >= self.steps_per_epoch or step != epoch * self.steps_per_epoch + batch:
            raise ckpt.CheckpointError(
                f"{source}: inconsistent counters (step {step}, epoch {epoch}, batch_in_epoch {batch} with "
                f"{self.steps_per_epoch} steps per epoch); restore the run directory from a copy, or start the run "
                "over with --overwrite")
        try:
            ckpt.load_model_state(self.model, arrays)
            self.rule.load_state_arrays({k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")})
            self.rng = ckpt.restore_rng(meta["epoch_rng_state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{source}: its state does not fit this run ({type(exc).__name__}: {exc}); "
                                       "restore the run directory from a copy, or start the run over with "
                                       "--overwrite") from None
        self.step, self.epoch, self.batch_in_epoch = step, epoch, batch
        self.epoch_rng_state = meta["epoch_rng_state"]
        self.sums = {k: meta["sums"][k] for k in CHECKPOINT_SUMS_FIELDS}
        self.train_time = meta["train_time_s"]
        self.epoch_time_before = meta.get("epoch_time_s", 0.0)

    def _save_checkpoint(self) -> None:
        arrays = {**ckpt.model_state(self.model), **{f"opt/{k}": v for k, v in self.rule.state_arrays().items()}}
        meta = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "epoch_rng_state": self.epoch_rng_state, "sums": self.sums, "train_time_s": self.train_time,
                "epoch_time_s": self.epoch_time_before, "config": self.config.to_dict(),
                "ranks": ranks_of(self.model), "data_fingerprint": self.data_fingerprint}
        ckpt.save_checkpoint(self.out, arrays, meta)
        self.checkpoint_step = self.step

    # -- one step ----------------------------------------------------------------------
    def _where(self) -> str:
        return f"step {self.step + 1} (epoch {self.epoch + 1})"

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

    def _train_step(self, x, y, close_cycle: bool) -> dict:
        c = self.config
        start = time.perf_counter()
        loss, logits = self._forward_backward(x, y)
        lr = self.lr_at(self.step)
        record = {"step": self.step + 1, "epoch": self.epoch + 1, "loss": loss,
                  "accuracy": accuracy(logits, y), "lr": lr}
        if c.check_descent:
            grad_norm_before = self._gradient_norm()
            plain_sq = self._plain_gradient_sq()
        with _overflow_is_divergence(f"the update of {self._where()}"):
            reports = self.rule.step(self.model, lr, lambda: self._forward_backward(x, y), close_cycle)
        self._check_parameters()
        record["ranks"] = ranks_of(self.model)
        record["layers"] = reports
        if c.check_descent:
            record["descent"] = self._descent(x, y, loss, reports, plain_sq, grad_norm_before, lr)
        record["time_s"] = time.perf_counter() - start
        self.sums["loss"] += loss * len(y)
        self.sums["correct"] += int(round(record["accuracy"] * len(y)))
        self.sums["seen"] += len(y)
        self.step += 1
        append_jsonl(self.steps_path, record)
        return record

    def _descent(self, x, y, loss_before, reports, plain_sq, grad_norm_before, lr) -> dict:
        loss_after, _ = self._forward_backward(x, y)
        method = self.config.method
        if method == "tdlrt":
            proj_sq = plain_sq + sum(r["proj_grad_norm"] ** 2 for r in reports.values())
            eta = math.sqrt(sum(r["eta"] ** 2 for r in reports.values()))
        elif method == "full":
            proj_sq, eta = plain_sq, 0.0
        else:
            proj_sq = eta = None
        return descent_record(loss_before, loss_after, lr, proj_sq, eta, grad_norm_before,
                              self._gradient_norm())

    # -- epochs ------------------------------------------------------------------------
    def _progress_text(self, record) -> str:
        seen = max(self.sums["seen"], 1)
        ranks = " ".join(f"{n} {'x'.join(map(str, r))}" for n, r in record["ranks"].items())
        return (f"epoch {self.epoch + 1}/{self.config.epochs} loss {self.sums['loss'] / seen:.4f} "
                f"acc {100 * self.sums['correct'] / seen:.1f}%" + (f" ranks {ranks}" if ranks else ""))

    def _end_epoch(self, epoch_time: float, partial: bool) -> dict:
        start = time.perf_counter()
        with _overflow_is_divergence(f"the evaluation after step {self.step}", invalid=True):
            test_loss, test_acc = evaluate(self.model, self.test_set)
        report = parameter_report(self.model)
        seen = max(self.sums["seen"], 1)
        record = {
            "epoch": self.epoch + 1, "step": self.step, "partial": partial,
            "train_loss": self.sums["loss"] / seen, "train_accuracy": self.sums["correct"] / seen,
            "test_loss": test_loss, "test_accuracy": test_acc,
            **self._validation_metrics(),
            "ranks": ranks_of(self.model),
            "layer_params": {n: layer["stored"] for n, layer in report["layers"].items()},
            "weights": report["weights"], "params": report["params"],
            "conv_compression": report["conv_compression"], "network_compression": report["network_compression"],
            "epoch_time_s": epoch_time, "eval_time_s": time.perf_counter() - start, "elapsed_s": self.train_time,
        }
        if self.partial_record:
            keep_jsonl(self.metrics_path, lambda r: not r["partial"])
            self.partial_record = False
        append_jsonl(self.metrics_path, record)
        return record

    def _validation_metrics(self) -> dict:
        """``validation_loss``, ``validation_accuracy`` on the ``--validation`` split (empty without one)."""
        if self.validation_set is None:
            return {}
        loss, acc = evaluate(self.model, self.validation_set)
        return {"validation_loss": loss, "validation_accuracy": acc}

    def run(self) -> dict:
        c = self.config
        progress = ProgressLine(self.steps_per_epoch, stream=self.stream, enabled=not c.quiet)
        status, message = "completed", None
        try:
            while self.epoch < c.epochs:
                if c.max_steps is not None and self.step >= c.max_steps:
                    status = "max_steps"
                    break
                epoch_start = time.perf_counter()
                batches = iterate_minibatches(self.train_set, c.batch_size, self.rng)
                for b, (x, y) in enumerate(batches):
                    if b < self.batch_in_epoch:
                        continue
                    last = b + 1 == self.steps_per_epoch or (c.max_steps is not None
                                                             and self.step + 1 >= c.max_steps)
                    record = self._train_step(x, y, close_cycle=last)
                    self.batch_in_epoch = b + 1
                    if self.batch_in_epoch % c.log_every == 0 or self.batch_in_epoch == self.steps_per_epoch:
                        progress.update(self.batch_in_epoch, self._progress_text(record))
                    if c.max_steps is not None and self.step >= c.max_steps:
                        break
                spent = time.perf_counter() - epoch_start
                self.train_time += spent
                # the whole epoch's time, also when it was resumed in the middle
                epoch_time = self.epoch_time_before + spent
                partial = self.batch_in_epoch < self.steps_per_epoch
                record = self._end_epoch(epoch_time, partial)
                progress.finish(self._progress_text({"ranks": record["ranks"]})
                                + f" | test acc {100 * record['test_accuracy']:.2f}%")
                if partial:
                    status = "max_steps"
                    self.epoch_time_before = epoch_time
                else:
                    self.epoch_time_before = 0.0
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self.sums = {"loss": 0.0, "correct": 0, "seen": 0}
                    self.epoch_rng_state = ckpt.rng_state(self.rng)
                self._save_checkpoint()
                if partial:
                    break
        except TrainingDiverged as exc:
            progress.finish()
            kept = ("no checkpoint had been written yet" if self.checkpoint_step is None else
                    f"the last good checkpoint (step {self.checkpoint_step}) was kept unchanged")
            message = f"training diverged: {exc}; {kept}. Lower --lr."
            self._write_summary("diverged", message)
            raise TrainingDiverged(message) from None
        return self._write_summary(status, message)

    def _write_summary(self, status: str, message) -> dict:
        """``summary.json`` from the model and ``metrics.jsonl`` (the records of every invocation
        of the run, so that a resumed run reports what an uninterrupted one does)."""
        c = self.config
        records = read_jsonl(self.metrics_path)
        last = records[-1] if records else None
        if last is None or last["step"] != self.step:
            test_loss, test_acc = evaluate(self.model, self.test_set) if status != "diverged" else (None, None)
            validation = self._validation_metrics() if status != "diverged" else {}
        else:
            test_loss, test_acc = last["test_loss"], last["test_accuracy"]
            validation = {k: last[k] for k in ("validation_loss", "validation_accuracy") if k in last}
        epoch_times = [r["epoch_time_s"] for r in records if not r["partial"]]
        steps_done = len(epoch_times) * self.steps_per_epoch
        report = parameter_report(self.model)
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
            "ranks": ranks_of(self.model),
            "compression": {"conv": report["conv_compression"], "network": report["network_compression"]},
            "parameters": report,
            "epochs_completed": self.epoch,
            "steps": self.step,
            "time_per_epoch_s": float(np.mean(epoch_times)) if epoch_times else None,
            "time_per_step_s": sum(epoch_times) / steps_done if steps_done else None,
            "chance_level": chance,
            "warnings": warnings,
            "message": message,
        }
        if c.plots and status != "diverged":
            from .plots import plot_run

            summary["plots"] = [p.name for p in plot_run(self.out, core_spectra(self.model))]
        write_json(self.out / "summary.json", summary)
        return summary
