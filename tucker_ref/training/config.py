"""The settings of one training run (:class:`TrainConfig`), validated, with the defaults and why.

Defaults and their reasons (the same text is in ``tucker-ref train --help`` and the README):

* ``lr = 0.05``, ``batch_size = 128``: the LeNet5 / MNIST setting of DLRT (spec §5).
* ``momentum = 0.9`` (heavy ball): on the embedded 4,000/1,000 subset plain SGD at lr 0.05
  oscillates between 67% and 92% test accuracy over 10 epochs, while momentum 0.9 reaches
  96.0% after 4 epochs (PyTorch reference of issue 5). For TDLRT the velocity lives on the
  core and follows every change of basis (:mod:`tucker_ref.integrators.optim`).
  ``--check-descent`` forces plain SGD (the case the theory covers).
* ``tau = 0.1``: relative per-mode truncation tolerance, ``ϑ = τ‖Ĉ1‖_F`` (spec §3).
* ``adaptive_modes = "channel"``: the output and input channel modes (0, 1) of each conv
  kernel and both modes of the dense layer adapt; the 5×5 spatial modes stay at full rank
  (frozen), as in the authors' code. ``"all"`` adapts every mode.
* ``init_rank``: initial ranks of the adaptive modes; the initial factorized model is the
  HOSVD, at those ranks, of the PyTorch-style dense initialization with the same seed.
* ``dtype``: see :data:`DEFAULT_DTYPE`; ``--check-descent`` defaults to float64.
* The data split is fixed (seed 0 of :func:`tucker_ref.data.load_mnist5k`) for every
  ``seed``, so all runs are measured on the same 1,000 test images; ``seed`` draws the
  initialization and the mini-batch order.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields

#: Methods the trainer runs (``--method``).
METHODS = ("tdlrt", "full", "naive-tucker", "fixed-rank", "riemannian")
#: Methods whose conv layers and first dense layer are factorized.
FACTORIZED_METHODS = ("tdlrt", "naive-tucker", "fixed-rank", "riemannian")
#: Methods whose integrator steps carry no momentum state: they run plain SGD.
SGD_ONLY_METHODS = ("fixed-rank", "riemannian")
#: ``--variant`` values and the integrator variant each selects.
VARIANTS = {"k_step": "k_step", "gradient": "augmented_gradient"}
#: float32: measured 1.4-2× faster per step than float64 on 2 cores (TDLRT and full LeNet5);
#: every array stays float32 end to end.
DEFAULT_DTYPE = "float32"
#: ``--init-rank`` default: the fraction of each adaptive mode's dimension to start at.
DEFAULT_INIT_RANK = 0.2

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

    ``momentum=None`` and ``dtype=None`` mean "the default": 0.9 / :data:`DEFAULT_DTYPE`;
    momentum 0 with ``check_descent`` and for :data:`SGD_ONLY_METHODS`; float64 with
    ``check_descent``.
    """

    method: str = "tdlrt"
    out: str = "runs/train"
    epochs: int = 4
    tau: float = 0.1
    lr: float = 0.05
    momentum: float | None = None
    batch_size: int = 128
    seed: int = 0
    variant: str = "k_step"
    adaptive_modes: object = "channel"
    init_rank: object = DEFAULT_INIT_RANK
    rmin: int = 1
    rmax: int | None = None
    data: str = "mnist5k"
    resume: bool = False
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
        for name in ("tau", "lr"):
            value = getattr(c, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            setattr(c, name, float(value))
        if c.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        for name in ("epochs", "batch_size", "log_every", "rmin"):
            _positive_int(c, name)
        for name in ("rmax", "train_subset", "test_subset", "max_steps"):
            if getattr(c, name) is not None:
                _positive_int(c, name)
        if c.rmax is not None and c.rmax < c.rmin:
            raise ValueError(f"rmax ({c.rmax}) must be >= rmin ({c.rmin})")
        if isinstance(c.seed, bool) or not isinstance(c.seed, numbers.Integral) or c.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {c.seed!r}")
        c.adaptive_modes = parse_adaptive_modes(c.adaptive_modes)
        c.init_rank = parse_init_rank(c.init_rank)
        plain_sgd = c.check_descent or c.method in SGD_ONLY_METHODS
        if c.momentum is None:
            c.momentum = 0.0 if plain_sgd else 0.9
        if isinstance(c.momentum, bool) or not isinstance(c.momentum, numbers.Real) or not 0 <= c.momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1), got {c.momentum!r}")
        c.momentum = float(c.momentum)
        if c.check_descent and c.momentum != 0:
            raise ValueError("check_descent measures plain SGD steps: momentum must be 0 (leave --momentum unset)")
        if c.method in SGD_ONLY_METHODS and c.momentum != 0:
            raise ValueError(f"method {c.method} has no momentum transport, so it runs plain SGD: momentum must "
                             f"be 0 (leave --momentum unset), got {c.momentum}")
        if c.dtype is None:
            c.dtype = "float64" if c.check_descent else DEFAULT_DTYPE
        if c.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {c.dtype!r}")
        if not isinstance(c.data, str) or not c.data:
            raise ValueError(f"data must be 'mnist5k' or a directory path, got {c.data!r}")
        if not isinstance(c.out, str) or not c.out:
            raise ValueError(f"out must be a directory path, got {c.out!r}")
        return c

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


def _positive_int(c: TrainConfig, name: str) -> None:
    value = getattr(c, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    setattr(c, name, int(value))
