"""The settings of one training run (:class:`TrainConfig`), validated, with the defaults and why.

Defaults and their reasons (the same text is in ``tucker-ref train --help`` and the README):

* ``lr = 0.05``, ``batch_size = 128``: the LeNet5 / MNIST setting of the DLRT paper.
* ``optimizer = "momentum"`` with ``momentum =`` :data:`~tucker_ref.integrators.optim.DEFAULT_MOMENTUM`
  (heavy ball, 0.9): on the embedded 4,000/1,000
  subset plain SGD at lr 0.05 oscillates between 67% and 92% test accuracy over 10 epochs,
  while momentum 0.9 reaches 96.0% after 4 epochs (a PyTorch reference run). For TDLRT the
  optimizer's state lives on the core and follows every change of basis
  (:mod:`tucker_ref.integrators.optim`). ``sgd``, ``adam`` and ``adamw`` (the authors'
  protocol) are the alternatives; ``weight_decay`` defaults to 0.01 for ``adamw`` (PyTorch's
  default) and 0 otherwise. ``--check-descent`` forces plain SGD (the case the theory covers).
* ``lr_schedule = "constant"``; ``"cosine"`` decays ``lr`` to 0 over all steps of the run.
  ``clip_grad_norm = None``; a number clips the norm of all gradients the step's optimizer
  reads (for TDLRT: the S-step core gradients and the dense parameters' gradients).
* ``s_steps = 1``: the paper's step on every batch (augment, one S-step, truncate). ``K > 1``
  is the authors' cycle: augment on one batch, S-steps on it and the next ``K − 1`` batches,
  truncate (an open cycle is closed at the end of every epoch and when ``--max-steps``
  stops the run).
* ``tau = 0.1``: relative per-mode truncation tolerance, ``ϑ = τ‖Ĉ1‖_F`` (docs/algorithms.md §3).
* ``adaptive_modes = "channel"``: the output and input channel modes (0, 1) of each conv
  kernel and both modes of the dense layer adapt; the 5×5 spatial modes stay at full rank
  (frozen), as in the authors' code. ``"all"`` adapts every mode.
* ``init_rank``: initial ranks of the adaptive modes; the initial factorized model is the
  HOSVD, at those ranks, of the PyTorch-style dense initialization with the same seed.
  Default: ``tdlrt`` starts at full rank (capped by ``rmax`` / ``rmax_fraction``), so that τ
  decides the ranks; the fixed-rank methods start at :data:`DEFAULT_INIT_RANK`.
* ``rmax_fraction``: caps each adaptive rank at ``max(1, ⌊f·n_i⌋)`` (the authors use 1/2);
  ``None`` = no cap. ``rmin`` is lowered to the cap where the cap is smaller.
* ``init_from``: a run directory of ``--method full``; its last checkpoint's weights start
  this run, factorized layers by ST-HOSVD at ``init_rank`` (decompose-then-finetune).
* ``validation``: the number of training images set aside (stratified, seeded) to choose
  settings on; their loss/accuracy is logged per epoch. 0 = none.
* ``dtype``: see :data:`DEFAULT_DTYPE`; ``--check-descent`` defaults to float64.
* ``overwrite = False``: a fresh run refuses an ``out`` that holds files it did not write
  (:mod:`~tucker_ref.training.rundir`); ``True`` replaces the run files in it. Never with
  ``resume``.
* The data split is fixed (seed 0 of :func:`tucker_ref.data.load_mnist5k`) for every
  ``seed``, so all runs are measured on the same 1,000 test images; ``seed`` draws the
  initialization and the mini-batch order.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from dataclasses import asdict, dataclass, fields

from ..checks import check_nonneg, check_positive_int, check_unit_interval
from ..integrators.optim import DEFAULT_MOMENTUM
from ..truncation import TruncationRule
#: ``--variant`` values (a command-line contract) -> the integrator's variant name
#: (:data:`tucker_ref.integrators.steps.VARIANTS`): the one place the two vocabularies meet.
VARIANTS = {"k_step": "k_step", "gradient": "augmented_gradient"}
#: float32: measured 1.4-2× faster per step than float64 on 2 cores (TDLRT and full LeNet5);
#: every array stays float32 end to end.
DEFAULT_DTYPE = "float32"
#: ``--init-rank`` default of the fixed-rank methods: the fraction of each adaptive mode's
#: dimension to start at (``tdlrt`` starts at full rank, or at the cap).
DEFAULT_INIT_RANK = 0.2


@dataclass(frozen=True)
class MethodSpec:
    """What the settings and the trainer need to know of a ``--method`` (its step is in :mod:`.methods`).

    Attributes
    ----------
    factorized : bool
        The conv layers and the first dense layer are factorized.
    chooses_ranks : bool
        The step chooses the ranks (by ``tau``): the layers start at full rank (capped by
        ``rmax`` / ``rmax_fraction``) and the summary shows where the ranks started.
    cycles : bool
        Takes ``s_steps > 1`` (several S-steps on one augmented basis).
    sgd_only : bool
        Its integrator steps carry no optimizer state: plain SGD only.
    """

    factorized: bool
    chooses_ranks: bool = False
    cycles: bool = False
    sgd_only: bool = False

    @property
    def default_init_rank(self):
        """``init_rank`` when none is given (or for a layer a per-layer ``--init-rank`` does not name)."""
        return None if self.chooses_ranks else DEFAULT_INIT_RANK


#: The one table of per-method facts, in ``--method`` order.
METHOD_SPECS = {
    "tdlrt": MethodSpec(factorized=True, chooses_ranks=True, cycles=True),
    "full": MethodSpec(factorized=False),
    "naive-tucker": MethodSpec(factorized=True),
    "fixed-rank": MethodSpec(factorized=True, sgd_only=True),
    "fixed-rank-layerwise": MethodSpec(factorized=True, sgd_only=True),
    "riemannian": MethodSpec(factorized=True, sgd_only=True),
}
#: Methods the trainer runs (``--method``).
METHODS = tuple(METHOD_SPECS)
#: Methods whose conv layers and first dense layer are factorized.
FACTORIZED_METHODS = tuple(m for m, spec in METHOD_SPECS.items() if spec.factorized)
#: Methods whose integrator steps carry no momentum state: they run plain SGD.
SGD_ONLY_METHODS = tuple(m for m, spec in METHOD_SPECS.items() if spec.sgd_only)
#: ``--optimizer`` values.
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")
#: ``--lr-schedule`` values.
LR_SCHEDULE_NAMES = ("constant", "cosine")
#: Default decoupled weight decay of ``adamw`` (PyTorch's).
ADAMW_WEIGHT_DECAY = 0.01

_LAYER_RANKS = re.compile(r"^\s*(\w+)\s*[:=]\s*(\d+(?:\s*x\s*\d+)*)\s*$")


def parse_init_rank(text):
    """Parse an ``--init-rank`` value.

    Forms: a fraction in ``(0, 1]`` (``"0.5"``: ``r_i = max(1, ⌈0.5 n_i⌉)`` on adaptive modes),
    an integer ``>= 1`` (``"8"``: ``r_i = min(8, n_i)``), or explicit ranks per layer
    (``"conv1=4x1x5x5,conv2=8x6x5x5,fc1=20x20"``, every mode given; layers not named use the
    default fraction). Returns a float, an int or a dict ``layer -> tuple``.
    """
    if isinstance(text, (int, float, dict)) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str):
        text = text.strip()
        if re.fullmatch(r"\d+", text):
            value = int(text)
        elif "=" in text or ":" in text:
            value = {}
            for part in text.split(","):
                match = _LAYER_RANKS.match(part)
                if not match:
                    raise ValueError(f"init_rank entry {part!r} must look like NAME=r1xr2x... (e.g. conv2=8x6x5x5)")
                value[match.group(1)] = tuple(int(r) for r in match.group(2).split("x"))
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"init_rank must be a fraction in (0, 1], an integer >= 1 or NAME=r1xr2x...[,...], got {text!r}"
                ) from None
    else:
        raise TypeError(f"init_rank must be a str, int, float or dict, got {type(text).__name__}")
    if isinstance(value, float) and not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"init_rank as a fraction must be in (0, 1], got {value!r}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"init_rank as an integer must be >= 1, got {value!r}")
    if isinstance(value, dict):
        for name, ranks in value.items():
            if not ranks or any(not isinstance(r, numbers.Integral) or r < 1 for r in ranks):
                raise ValueError(f"init_rank[{name!r}] must be positive integers, got {ranks!r}")
    return value


def parse_adaptive_modes(text):
    """``"channel"`` (default), ``"all"``, or comma-separated conv mode indices (``"0,1,2"``).

    Returns ``"channel"``, ``"all"`` or a sorted tuple of ints in ``0..3``. The dense layer
    (order 2) always adapts both of its modes.
    """
    if isinstance(text, tuple):
        modes = text
    elif text in ("channel", "all"):
        return text
    elif isinstance(text, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        modes = tuple(int(m) for m in text.split(","))
    else:
        raise ValueError(f"adaptive_modes must be 'channel', 'all' or conv mode indices like '0,1', got {text!r}")
    if not modes or any(not 0 <= m <= 3 for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"adaptive_modes must be distinct conv mode indices in 0..3, got {text!r}")
    return tuple(sorted(modes))


@dataclass
class TrainConfig:
    """All settings of a run; ``validated()`` checks them and fills the method-dependent defaults.

    ``None`` means "the default" for ``optimizer`` (``momentum``; ``sgd`` with
    ``check_descent``, for :data:`SGD_ONLY_METHODS` and with ``momentum=0``), ``momentum``
    (:data:`~tucker_ref.integrators.optim.DEFAULT_MOMENTUM` for ``momentum``), ``weight_decay`` (0.01 for ``adamw``, else 0), ``dtype``
    (:data:`DEFAULT_DTYPE`; float64 with ``check_descent``) and ``init_rank`` (full rank for
    ``tdlrt``, :data:`DEFAULT_INIT_RANK` otherwise).
    """

    method: str = "tdlrt"
    out: str = "runs/train"
    epochs: int = 4
    tau: float = 0.1
    lr: float = 0.05
    momentum: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    lr_schedule: str = "constant"
    clip_grad_norm: float | None = None
    s_steps: int = 1
    batch_size: int = 128
    seed: int = 0
    variant: str = "k_step"
    adaptive_modes: object = "channel"
    init_rank: object = None
    rmin: int = 1
    rmax: int | None = None
    rmax_fraction: float | None = None
    init_from: str | None = None
    data: str = "mnist5k"
    validation: int = 0
    resume: bool = False
    overwrite: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    max_steps: int | None = None
    dtype: str | None = None
    log_every: int = 10
    check_descent: bool = False
    diagnostics: bool = False
    plots: bool = True
    quiet: bool = False

    def validated(self) -> "TrainConfig":
        """A copy with defaults resolved; ``ValueError``/``TypeError`` naming the bad setting."""
        c = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        if c.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {c.method!r}")
        if c.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {c.variant!r}")
        spec = METHOD_SPECS[c.method]
        if c.tau is None:
            raise ValueError("tau is required (a non-negative number)")
        rule = c.truncation_rule
        if rule.ndim is not None:
            raise TypeError(f"rmin and rmax must be integers (one bound for every adaptive mode of every layer), "
                            f"got rmin={c.rmin!r}, rmax={c.rmax!r}")
        c.tau, c.rmin, c.rmax, c.rmax_fraction = rule.tau, rule.rmin, rule.rmax, rule.rmax_fraction
        c.lr = check_nonneg(c.lr, "lr", allow_none=False)
        if c.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        for name in ("epochs", "batch_size", "log_every", "s_steps"):
            setattr(c, name, check_positive_int(getattr(c, name), name))
        for name in ("train_subset", "test_subset", "max_steps"):
            if getattr(c, name) is not None:
                setattr(c, name, check_positive_int(getattr(c, name), name))
        if isinstance(c.seed, bool) or not isinstance(c.seed, numbers.Integral) or c.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {c.seed!r}")
        if isinstance(c.validation, bool) or not isinstance(c.validation, numbers.Integral) or c.validation < 0:
            raise ValueError(f"validation must be an integer >= 0 (images set aside), got {c.validation!r}")
        c.adaptive_modes = parse_adaptive_modes(c.adaptive_modes)
        if c.init_rank is None:
            c.init_rank = spec.default_init_rank
        if c.init_rank is not None:
            c.init_rank = parse_init_rank(c.init_rank)
        _validate_optimizer(c)
        if c.s_steps > 1 and not spec.cycles:
            raise ValueError(f"s_steps > 1 is the TDLRT cycle; method {c.method} takes one step per batch")
        if c.check_descent and c.s_steps != 1:
            raise ValueError("check_descent measures one TDLRT step per batch: s_steps must be 1")
        if c.init_from is not None and (not isinstance(c.init_from, str) or not c.init_from):
            raise ValueError(f"init_from must be the directory of a --method full run, got {c.init_from!r}")
        if c.dtype is None:
            c.dtype = "float64" if c.check_descent else DEFAULT_DTYPE
        if c.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {c.dtype!r}")
        if not isinstance(c.data, str) or not c.data:
            raise ValueError(f"data must be 'mnist5k' or a directory path, got {c.data!r}")
        if not isinstance(c.out, str) or not c.out:
            raise ValueError(f"out must be a directory path, got {c.out!r}")
        if c.resume and c.overwrite:
            raise ValueError("overwrite starts a fresh run and cannot be combined with resume (which continues "
                             "the run in out)")
        return c

    @functools.cached_property
    def truncation_rule(self) -> TruncationRule:
        """``tau``, ``rmin``, ``rmax``, ``rmax_fraction`` as one :class:`~tucker_ref.truncation.TruncationRule`.

        Made, and so validated, once per config, by :meth:`validated`; the update rule passes it
        to every truncation of the run (docs/algorithms.md §3)."""
        return TruncationRule(tau=self.tau, rmin=self.rmin, rmax=self.rmax, rmax_fraction=self.rmax_fraction)

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(d["init_rank"], dict):
            d["init_rank"] = {k: list(v) for k, v in d["init_rank"].items()}
        if isinstance(d["adaptive_modes"], tuple):
            d["adaptive_modes"] = list(d["adaptive_modes"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        if isinstance(d.get("init_rank"), dict):
            d["init_rank"] = {k: tuple(v) for k, v in d["init_rank"].items()}
        if isinstance(d.get("adaptive_modes"), list):
            d["adaptive_modes"] = tuple(d["adaptive_modes"])
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**d)


def _validate_optimizer(c: TrainConfig) -> None:
    """Resolve and check ``optimizer``, ``momentum``, ``weight_decay``, ``lr_schedule``, ``clip_grad_norm``."""
    sgd_only = METHOD_SPECS[c.method].sgd_only
    plain_sgd = c.check_descent or sgd_only
    if c.momentum is not None:
        check_unit_interval(c.momentum, "momentum")
    if c.optimizer is None:
        c.optimizer = "sgd" if c.momentum == 0 or (plain_sgd and c.momentum is None) else "momentum"
    if c.optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, got {c.optimizer!r}")
    if c.optimizer == "momentum":
        c.momentum = DEFAULT_MOMENTUM if c.momentum is None else float(c.momentum)
    elif c.momentum not in (None, 0):
        raise ValueError(f"momentum applies to --optimizer momentum only, got momentum {c.momentum} with "
                         f"optimizer {c.optimizer}")
    else:
        c.momentum = 0.0
    if c.check_descent and c.optimizer != "sgd":
        raise ValueError("check_descent measures plain SGD steps: momentum must be 0 and the optimizer sgd "
                         "(leave --optimizer and --momentum unset)")
    if sgd_only and c.optimizer != "sgd":
        raise ValueError(f"method {c.method} has no momentum transport (no optimizer state at all), so it runs "
                         f"plain SGD: leave --optimizer and --momentum unset, got optimizer {c.optimizer}, "
                         f"momentum {c.momentum}")
    if c.weight_decay is None:
        c.weight_decay = ADAMW_WEIGHT_DECAY if c.optimizer == "adamw" else 0.0
    for name in ("weight_decay", "clip_grad_norm"):
        setattr(c, name, check_nonneg(getattr(c, name), name))
    if c.clip_grad_norm == 0:
        raise ValueError("clip_grad_norm must be > 0 (leave it unset for no clipping), got 0")
    if c.clip_grad_norm is not None and sgd_only:
        raise ValueError(f"clip_grad_norm is not implemented for method {c.method}")
    if c.weight_decay and sgd_only:
        raise ValueError(f"weight_decay is not implemented for method {c.method}")
    if c.lr_schedule not in LR_SCHEDULE_NAMES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULE_NAMES)}, got {c.lr_schedule!r}")

