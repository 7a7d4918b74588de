"""Where a run stands between two steps, and how that goes into its checkpoint and back.

:class:`RunState` is what a run carries from one invocation to the next: the counters, the
running sums of the current epoch, the mini-batch generator (with its state at the start of the
epoch) and the times. :func:`save_run_checkpoint` writes it, with the parameters and the update
rule's optimizer state, as the run's checkpoint (:mod:`~tucker_ref.training.checkpoint`):

``checkpoint-<step>.npz``
    the model's arrays (:func:`~tucker_ref.training.checkpoint.model_state`) and, under
    ``opt/<key>``, the rule's :meth:`~tucker_ref.training.methods.UpdateRule.state_arrays`;
``checkpoint.json``
    :data:`CHECKPOINT_FIELDS`: the counters, ``epoch_rng_state``, ``sums``, the times, the
    settings of the run (``config``), the ranks and the data fingerprint.

:class:`StoredRun` reads it back for ``--resume``: the fields are checked, the settings merged
with those of the invocation (:meth:`StoredRun.resumed_config`), and the state put in place
after the data and the counters are checked (:meth:`StoredRun.restore`).

The checkpoint keeps the generator's state at the start of the current epoch, with the number
of mini-batches done: a resumed run redraws the epoch's permutation and skips what was done.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .config import TrainConfig
from .metrics import ranks_of

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


def _no_sums() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclasses.dataclass
class RunState:
    """The position of a run: its counters, running sums, mini-batch generator and times.

    ``step`` steps are done in all, ``batch_in_epoch`` of them in the current (0-based)
    ``epoch``. ``rng`` draws the mini-batch order, ``epoch_rng_state`` is its state at the start of the
    current epoch; ``sums`` are the running sums (``loss``, ``correct``, ``seen``) of the
    current epoch's mini-batches; ``train_time`` is the training time of the run so far and
    ``epoch_time_before`` the time earlier invocations spent on the current epoch.
    """

    rng: np.random.Generator
    epoch_rng_state: dict
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    sums: dict = dataclasses.field(default_factory=_no_sums)
    train_time: float = 0.0
    epoch_time_before: float = 0.0

    @classmethod
    def fresh(cls, seed: int) -> "RunState":
        """The start of a run with ``--seed seed``."""
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        return cls(rng, ckpt.rng_state(rng))

    def count_batch(self, loss: float, accuracy: float, size: int) -> None:
        """One step done on a mini-batch of ``size`` examples with this loss and accuracy (before the step)."""
        self.sums["loss"] += loss * size
        self.sums["correct"] += int(round(accuracy * size))
        self.sums["seen"] += size
        self.step += 1

    def next_epoch(self) -> None:
        """The current epoch is complete: start the next one where the generator stands."""
        self.epoch_time_before = 0.0
        self.epoch += 1
        self.batch_in_epoch = 0
        self.sums = _no_sums()
        self.epoch_rng_state = ckpt.rng_state(self.rng)


def save_run_checkpoint(out: Path, state: RunState, model, rule, config: TrainConfig, data_fingerprint: str) -> None:
    """Commit the checkpoint of a run in ``out`` (:func:`~tucker_ref.training.checkpoint.save_checkpoint`)."""
    arrays = {**ckpt.model_state(model), **{f"opt/{k}": v for k, v in rule.state_arrays().items()}}
    meta = {"step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "epoch_rng_state": state.epoch_rng_state, "sums": state.sums, "train_time_s": state.train_time,
            "epoch_time_s": state.epoch_time_before, "config": config.to_dict(),
            "ranks": ranks_of(model), "data_fingerprint": data_fingerprint}
    ckpt.save_checkpoint(out, arrays, meta)


class StoredRun:
    """The committed checkpoint of the run in ``out``, read, with its fields checked.

    A checkpoint that fails a check raises
    :class:`~tucker_ref.training.checkpoint.CheckpointError` naming what is wrong."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / ckpt.CHECKPOINT_JSON
        self.arrays, self.meta = ckpt.load_checkpoint(out)
        ckpt.check_fields(self.meta, CHECKPOINT_FIELDS, self.path)
        ckpt.check_fields(self.meta["sums"], CHECKPOINT_SUMS_FIELDS, f"{self.path} (field 'sums')")

    def resumed_config(self, config: TrainConfig, explicit: frozenset) -> TrainConfig:
        """The settings of the resumed run: the checkpoint's, with some of this invocation's.

        Its :data:`PER_INVOCATION` settings and explicit :data:`RESUMABLE_OVERRIDES` come from
        ``config``; ``ValueError`` when another explicit setting differs from the checkpoint."""
        try:
            saved = TrainConfig.from_dict(self.meta["config"]).validated()
        except (TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{self.path}: field 'config' holds no valid settings ({exc}); restore the "
                                       "run directory from a copy, or start the run over with --overwrite") from None
        fixed = explicit - set(RESUMABLE_OVERRIDES) - set(PER_INVOCATION) - {"resume", "out"}
        conflicts = [f"{name}: given {getattr(config, name)!r}, checkpoint has {getattr(saved, name)!r}"
                     for name in sorted(fixed) if getattr(config, name) != getattr(saved, name)]
        if conflicts:
            raise ValueError("a resumed run continues with the settings of its checkpoint; these differ: "
                             + "; ".join(conflicts))
        overrides = {k: getattr(config, k) for k in RESUMABLE_OVERRIDES if k in explicit}
        overrides.update({k: getattr(config, k) for k in PER_INVOCATION})
        return dataclasses.replace(saved, resume=True, out=config.out, **overrides)

    def restore(self, model, rule, steps_per_epoch: int, data_fingerprint: str, data: str) -> RunState:
        """Load the checkpoint into ``model`` and ``rule``; return the state to continue from.

        First the checkpoint is checked against this run's data (``data_fingerprint`` of
        ``--data data``) and epoch length; nothing is written."""
        recorded = self.meta.get("data_fingerprint")
        if recorded is not None and recorded != data_fingerprint:
            raise ckpt.CheckpointError(
                f"{self.path}: the data differ from those this run was trained on (fingerprint {recorded[:12]}… "
                f"recorded, {data_fingerprint[:12]}… from --data {data} now); resume with the original data, or "
                "start a new run in another --out")
        meta = self.meta
        step, epoch, batch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if batch >= steps_per_epoch or step != epoch * steps_per_epoch + batch:
            raise ckpt.CheckpointError(
                f"{self.path}: inconsistent counters (step {step}, epoch {epoch}, batch_in_epoch {batch} with "
                f"{steps_per_epoch} steps per epoch); restore the run directory from a copy, or start the run "
                "over with --overwrite")
        try:
            ckpt.load_model_state(model, self.arrays)
            rule.load_state_arrays({k[len("opt/"):]: v for k, v in self.arrays.items() if k.startswith("opt/")})
            rng = ckpt.restore_rng(meta["epoch_rng_state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{self.path}: its state does not fit this run ({type(exc).__name__}: {exc}); "
                                       "restore the run directory from a copy, or start the run over with "
                                       "--overwrite") from None
        return RunState(rng, meta["epoch_rng_state"], step=step, epoch=epoch, batch_in_epoch=batch,
                        sums={k: meta["sums"][k] for k in CHECKPOINT_SUMS_FIELDS}, train_time=meta["train_time_s"],
                        epoch_time_before=meta.get("epoch_time_s", 0.0))

    def discard_stale_arrays(self) -> None:
        """Remove the array files of a write that was cut before or after its commit."""
        for stale in ckpt.stale_array_files(self.out):
            stale.unlink(missing_ok=True)
