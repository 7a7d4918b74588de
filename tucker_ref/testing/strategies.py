"""Hypothesis strategies for Tucker tensors with controlled spectra.

Every strategy draws a *seed* (and a few scalars that set the spectrum) with hypothesis and
builds the arrays with ``np.random.default_rng(seed)``. Drawing array entries one by one
(``hnp.arrays`` with its default fill) gives exactly singular matrices in most draws; a
seed plus a spectrum gives the conditioning a property needs, and a failing example
replays from its seed.

What is controlled (and checked inside the strategies with ``assert``):

* :func:`tucker_tensors` — feasible ranks ``r_i ≤ ∏_{j≠i} r_j``, orthonormal factors
  (QR of a Gaussian matrix, ``R`` with positive diagonal), and a core whose every unfolding
  ``Mat_i(C)`` has full row rank with ``σ_min(Mat_i(C)) ≥ min_sigma·σ_max(Mat_i(C))``.
* :func:`planted_tensors` / :func:`dense_tensors` — a dense tensor ``X = L + E``: a planted
  Tucker part ``L`` as above and Gaussian noise ``E`` of a drawn relative size
  ``‖E‖ = level·‖L‖`` (``level`` from ``noise_levels``, ``0`` included by default).
  Without noise, the multilinear rank of ``X`` is exactly the planted rank, and the nonzero
  mode-``i`` singular values of ``X`` are those of ``Mat_i(C)`` (orthonormal factors).

Other helpers import these for integrator and layer tests; the builders
(:func:`~tucker_ref.tucker.random_orthonormal` and :func:`~tucker_ref.tucker.random_tucker`, re-exported
here, and :func:`conditioned_core`) are plain functions of a ``numpy.random.Generator`` so that
non-hypothesis code can reuse them; the strategies wrap them for hypothesis.

Draws that exercise a claim. By default ranks are uniform in ``[1, n_i]``, which makes
rank-1 and full-rank modes common — and on those many claims are trivially true (a
transposed ``1 × 1`` matrix is itself; an augmented basis that fills ``R^{n_i}`` contains
everything). The opt-in parameters ``min_rank``, ``room``, ``spreads`` and ``focus`` of
:func:`feasible_ranks_for` / :func:`tucker_tensors` bias the draws towards the non-trivial
regime (``r_i ≥ 2``, ``n_i ≥ 2r_i + 1``, spread spectra, one badly conditioned mode);
their defaults draw exactly what they drew before. :func:`tucker_example` builds the same
kind of tensor deterministically, for ``@example`` anchors, and :class:`DrawTally` counts
how many of a property test's draws were non-trivial (hypothesis ``event``) and fails the
test when that share falls below a stated minimum.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

from ..checks import check_ranks
from ..truncation import feasible_ranks
from ..tucker import TuckerTensor, mode_product, random_orthonormal, random_tucker, unfold

__all__ = [
    "ConvConfig",
    "Planted",
    "conditioned_core",
    "conv_configs",
    "dense_tensors",
    "feasible_ranks_for",
    "planted_tensors",
    "random_orthonormal",
    "random_tucker",
    "seeds",
    "shapes",
    "tucker_tensors",
    "unfolding_condition_numbers",
]

#: Operator-scaling sweeps stop once every unfolding's condition number is below this.
_SCALING_TARGET = 1.5
_MAX_SCALING_SWEEPS = 40


def seeds():
    """Seeds for ``np.random.default_rng`` (shrinks towards 0)."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def shapes(min_order: int = 2, max_order: int = 4, min_dim: int = 1, max_dim: int = 6):
    """Tensor shapes: ``d ∈ [min_order, max_order]`` modes of size ``n_i ∈ [min_dim, max_dim]``."""
    if not 1 <= min_order <= max_order:
        raise ValueError(f"need 1 <= min_order <= max_order, got {min_order}, {max_order}")
    if not 1 <= min_dim <= max_dim:
        raise ValueError(f"need 1 <= min_dim <= max_dim, got {min_dim}, {max_dim}")
    return st.lists(st.integers(min_dim, max_dim), min_size=min_order, max_size=max_order).map(tuple)


def _rank_interval(n: int, min_rank: int, room: bool) -> tuple[int, int]:
    """``[lo, hi]`` of the rank drawn for a mode of size ``n`` (see :func:`feasible_ranks_for`)."""
    lo = min(max(int(min_rank), 1), n)
    hi = max(lo, (n - 1) // 2) if room else n
    return lo, hi


@st.composite
def feasible_ranks_for(draw, shape, min_rank: int = 1, room: bool = False):
    """Ranks ``r_i ∈ [1, n_i]`` with ``r_i ≤ ∏_{j≠i} r_j`` (docs/theory.md §1) for a given ``shape``.

    Draws ``r_i`` uniformly in ``[1, n_i]`` and reduces them to the largest feasible ranks
    below (:func:`tucker_ref.truncation.feasible_ranks`), so full rank ``r = shape`` is drawn
    whenever ``shape`` itself is feasible.

    Bias towards non-trivial modes (both off by default, and then the draws are unchanged):

    * ``min_rank`` — draw ``r_i ≥ min(min_rank, n_i)`` (``min_rank = 2``: no rank-1 mode
      where the mode has room for two);
    * ``room`` — draw ``r_i ≤ max(lo, ⌊(n_i − 1)/2⌋)``, i.e. ``n_i ≥ 2r_i + 1`` wherever the
      mode allows it with ``r_i ≥ lo``: an augmented basis (at most ``2r_i`` columns) then does
      not fill ``R^{n_i}``, and no such mode is at full rank.

    The feasibility reduction can still lower a rank below ``min_rank`` (shape ``(5, 1)``
    allows only rank ``(1, 1)``); a test that needs the regime counts it (:class:`DrawTally`).
    """
    raw = [draw(st.integers(*_rank_interval(int(n), min_rank, room))) for n in shape]
    return feasible_ranks(raw)


def unfolding_condition_numbers(C: np.ndarray) -> list[float]:
    """``σ_max / σ_min`` of every unfolding ``Mat_i(C)`` (``inf`` when a row-rank is deficient)."""
    out = []
    for i in range(C.ndim):
        s = np.linalg.svd(unfold(C, i), compute_uv=False)
        out.append(float(s[0] / s[-1]) if s[-1] > 0 else math.inf)
    return out


def _scale_unfoldings(C: np.ndarray) -> np.ndarray:
    """Alternating operator scaling ``C ← C ×_i (Mat_i(C) Mat_i(C)^T)^{-1/2}``, renormalized.

    Drives every unfolding towards equal singular values; a generic core with feasible ranks
    reaches condition numbers below ~1.3 within a few sweeps.
    """
    for _ in range(_MAX_SCALING_SWEEPS):
        if max(unfolding_condition_numbers(C)) <= _SCALING_TARGET:
            break
        for i in range(C.ndim):
            P, s, _ = np.linalg.svd(unfold(C, i), full_matrices=False)
            C = mode_product(C, (P / s) @ P.T, i)
            C = C / np.linalg.norm(C)
    return C


def conditioned_core(rng: np.random.Generator, ranks, min_sigma: float, spread: float = 1.0,
                     norm: float = 1.0, focus: int | None = None) -> np.ndarray:
    """Core with full-row-rank unfoldings, ``cond(Mat_i(C)) ≤ 1/min_sigma`` for every ``i``.

    Construction: a Gaussian core is operator-scaled until every unfolding has condition
    number ``κ_0 ≤ 1.5``; then ``C ← C ×_j D_j`` with positive diagonal ``D_j`` whose
    log-ranges ``b_j`` sum to ``spread·log(1/(min_sigma·κ_0))`` (random split over the modes,
    both ends of each range attained); then random rotations ``C ← C ×_j Q_j`` (spectra
    unchanged) and ``‖C‖_F = norm``. Since ``cond(D_i M (⊗_{j≠i} D_j)^T) ≤ cond(M)·∏_j cond(D_j)``,
    every unfolding keeps ``cond ≤ κ_0·e^{Σ b_j} ≤ 1/min_sigma``; ``spread = 1`` pushes some
    unfolding close to that bound, ``spread = 0`` keeps ``cond ≤ 1.5``.

    ``focus = i`` gives the whole log-range to mode ``i`` (``b_i = spread·log(1/(min_sigma·κ_0))``,
    no random split): ``Mat_i(C) = D_i M`` with ``cond(M) ≤ κ_0``, so ``σ_min(Mat_i(C))/σ_max``
    is within a factor ``κ_0`` of ``e^{−b_i}`` — mode ``i`` is as badly conditioned as the bound
    allows (the random split spends part of the budget on rank-1 modes, where it does nothing).

    Parameters
    ----------
    ranks : sequence of int, feasible (``r_i ≤ ∏_{j≠i} r_j``; else ``ValueError``)
    min_sigma : float in (0, 0.5]
    spread : float in [0, 1]
    norm : float > 0
    focus : int, optional — the mode that receives the whole conditioning budget
    """
    ranks = tuple(int(r) for r in ranks)
    if any(r < 1 for r in ranks) or feasible_ranks(ranks) != ranks:
        raise ValueError(f"ranks must be positive and feasible (r_i <= prod_(j!=i) r_j), got {ranks}")
    if not 0 < min_sigma <= 0.5:
        raise ValueError(f"min_sigma must be in (0, 0.5], got {min_sigma}")
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    if focus is not None and not (isinstance(focus, (int, np.integer)) and 0 <= focus < len(ranks)):
        raise ValueError(f"focus must be None or a mode index in [0, {len(ranks)}), got {focus!r}")
    C = _scale_unfoldings(rng.standard_normal(ranks))
    kappa0 = max(unfolding_condition_numbers(C))
    assert kappa0 < 1 / min_sigma, f"operator scaling left cond {kappa0} (ranks {ranks})"
    # A hair of the budget is kept back so that rounding cannot push cond past 1/min_sigma: the
    # computed σ_min of an unfolding has a relative error of up to ~eps·cond, i.e. ~eps/min_sigma
    # at the bound (measured 3e-5 at min_sigma = 1e-12 with the whole range in one mode).
    margin = max(1e-6, 100 * np.finfo(np.float64).eps / min_sigma)
    budget = spread * max(math.log(1 / (min_sigma * kappa0)) - margin, 0.0)
    if focus is None:
        weights = rng.dirichlet(np.ones(len(ranks)))
    else:
        weights = np.zeros(len(ranks))
        weights[int(focus)] = 1.0
    for j, r in enumerate(ranks):
        if r > 1:
            u = np.concatenate(([0.0, 1.0], rng.uniform(size=r - 2)))
            C = mode_product(C, np.diag(np.exp(-weights[j] * budget * u)), j)
        C = mode_product(C, random_orthonormal(rng, r, r), j)
    C = C * (norm / np.linalg.norm(C))
    conds = unfolding_condition_numbers(C)
    assert max(conds) <= 1 / min_sigma, f"core unfolding condition numbers {conds} exceed 1/{min_sigma}"
    return C


def focus_mode(shape, ranks) -> int | None:
    """The mode a ``focus`` draw makes badly conditioned: the first with ``2 ≤ r_i < n_i`` (an
    augmented mode with a spectrum), else the first with ``r_i ≥ 2``, else ``None``."""
    for wanted in (lambda n, r: 2 <= r < n, lambda n, r: r >= 2):
        for i, (n, r) in enumerate(zip(shape, ranks)):
            if wanted(n, r):
                return i
    return None


@st.composite
def tucker_tensors(draw, min_order: int = 2, max_order: int = 4, min_dim: int = 1, max_dim: int = 6,
                   min_sigma: float = 1e-2, dtype=np.float64, shape=None, ranks=None, min_rank: int = 1,
                   room: bool = False, spreads=None, focus: bool = False):
    """A :class:`~tucker_ref.tucker.TuckerTensor` with orthonormal factors and a well-posed core.

    Controlled: the shape (drawn, or ``shape``), feasible ranks (drawn by
    :func:`feasible_ranks_for`, or ``ranks``), every core unfolding of full row rank with
    ``cond(Mat_i(C)) ≤ 1/min_sigma`` (how much of that range is used is drawn), and the norm
    ``‖C‖_F = 10^e`` with ``e ∈ [-2, 2]`` drawn, so that absolute tolerances get caught.
    Built in float64 and cast to ``dtype`` (float32 factors are orthonormal to float32 rounding).

    Bias towards the non-trivial regime (defaults: off, the draws are those of before):
    ``min_rank`` and ``room`` are passed to :func:`feasible_ranks_for`; ``spreads`` is the
    strategy of the spread (share of the conditioning range used, default ``floats(0, 1)``;
    e.g. ``floats(0.5, 1)`` for spread spectra); ``focus=True`` gives the whole range to one
    mode, :func:`focus_mode` (see :func:`conditioned_core`), so that with a small
    ``min_sigma`` that mode's ``σ_min(Mat_i(C))/‖C‖`` actually gets small.
    """
    if shape is None:
        shape = draw(shapes(min_order, max_order, min_dim, max_dim))
    shape = tuple(int(n) for n in shape)
    if ranks is None:
        ranks = draw(feasible_ranks_for(shape, min_rank=min_rank, room=room))
    ranks = check_ranks(ranks, shape)
    seed = draw(seeds())
    spread = draw(st.floats(0.0, 1.0) if spreads is None else spreads)
    exponent = draw(st.floats(-2.0, 2.0))
    rng = np.random.default_rng(seed)
    core = conditioned_core(rng, ranks, min_sigma, spread=spread, norm=10.0**exponent,
                            focus=focus_mode(shape, ranks) if focus else None)
    return random_tucker(rng, shape, ranks, core=core).astype(dtype)


def tucker_example(shape, ranks, seed: int = 0, min_sigma: float = 1e-2, spread: float = 1.0, norm: float = 1.0,
                   focus: int | None = None, dtype=np.float64) -> TuckerTensor:
    """The tensor :func:`tucker_tensors` would build, deterministically: for ``@example`` anchors.

    ``conditioned_core(default_rng(seed), ranks, min_sigma, spread, norm, focus)`` and factors
    from the same generator. ``spread = 1`` (the default) uses the whole conditioning range.
    """
    shape = tuple(int(n) for n in shape)
    ranks = check_ranks(ranks, shape)
    rng = np.random.default_rng(seed)
    core = conditioned_core(rng, ranks, min_sigma, spread=spread, norm=norm, focus=focus)
    return random_tucker(rng, shape, ranks, core=core).astype(dtype)


class DrawTally:
    """Counts the draws of a property test that exercise its claim, and requires a share of them.

    A property that is trivially true on most draws (a rank-1 mode, an augmented basis that
    fills the space, nothing truncated) tests little even when it passes. Usage::

        TALLY = DrawTally("mode rank >= 2 and S != S^T", minimum=0.6)

        @TALLY.require
        @example(...)                    # anchors: each must be non-trivial
        @given(...)
        def test_property(...):
            ...
            TALLY.record(nontrivial, "rank-1 mode" if ... else None)

    :meth:`record` emits a hypothesis ``event`` (``pytest --hypothesis-show-statistics`` shows
    the split) and keeps the flag. :meth:`require` wraps the ``@given`` test: it resets the
    tally, runs every example, then asserts that every explicit ``@example`` was non-trivial
    and that at least ``minimum`` of the generated draws were (hypothesis runs the explicit
    examples first, so they are the first ``len(hypothesis_explicit_examples)`` records).
    Draws rejected by ``assume`` are not recorded. The counts of the last run are kept in
    :attr:`last` (``anchors``, ``nontrivial``, ``generated``).

    Parameters
    ----------
    claim : str — what a non-trivial draw has (used in the event and the failure message)
    minimum : float in [0, 1] — required share of non-trivial generated draws
    """

    def __init__(self, claim: str, minimum: float):
        if not 0 <= minimum <= 1:
            raise ValueError(f"minimum must be a share in [0, 1], got {minimum}")
        self.claim = claim
        self.minimum = float(minimum)
        self.records: list[bool] = []
        self.last: dict = {}

    def record(self, nontrivial: bool, detail: str | None = None) -> None:
        """Record one draw; ``detail`` (optional) is emitted as a further event."""
        nontrivial = bool(nontrivial)
        event(f"{'non-trivial' if nontrivial else 'trivial'}: {self.claim}")
        if detail:
            event(detail)
        self.records.append(nontrivial)

    def require(self, test):
        """Decorator for a ``@given`` test (place it above ``@given`` and the ``@example`` s)."""
        anchors = len(getattr(test, "hypothesis_explicit_examples", ()))

        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            self.records = []
            test(*args, **kwargs)
            records = self.records
            generated = records[anchors:]
            hits = sum(generated)
            self.last = {"anchors": anchors, "nontrivial": hits, "generated": len(generated)}
            print(f"\n{test.__name__}: {hits} of {len(generated)} generated draws non-trivial ({self.claim})")
            assert len(records) >= anchors and all(records[:anchors]), (
                f"an @example anchor of {test.__name__} is trivial ({self.claim}): {records[:anchors]}")
            assert generated and hits >= self.minimum * len(generated), (
                f"{test.__name__}: only {hits} of {len(generated)} generated draws are non-trivial "
                f"({self.claim}); at least {self.minimum:.0%} required — the draws do not exercise the claim")

        return wrapper


class Planted(NamedTuple):
    """A dense tensor ``X = low_rank.full() + noise`` with its planted parts."""

    X: np.ndarray
    low_rank: TuckerTensor
    noise_level: float


@st.composite
def planted_tensors(draw, min_order: int = 2, max_order: int = 4, min_dim: int = 1, max_dim: int = 6,
                    min_sigma: float = 1e-2, noise_levels=(0.0, 1e-10, 1e-4, 1e-2), dtype=np.float64,
                    shape=None, ranks=None):
    """:class:`Planted` ``(X, low_rank, noise_level)`` with ``X = L + E``, ``‖E‖ = noise_level·‖L‖``.

    ``L`` is drawn by :func:`tucker_tensors` (same controls); ``E`` is Gaussian (from the same
    seeded generator) rescaled to the drawn relative level. The planted ranks are drawn below
    the shape, so most draws have a spectral gap in some mode: mode-``i`` singular values
    of ``X`` are those of ``Mat_i(C)`` followed by a noise floor of size ~``noise_level·‖L‖``.
    """
    T = draw(tucker_tensors(min_order, max_order, min_dim, max_dim, min_sigma, np.float64, shape, ranks))
    level = float(draw(st.sampled_from(tuple(noise_levels))))
    seed = draw(seeds())
    L = T.full()
    E = np.random.default_rng(seed).standard_normal(L.shape)
    X = L + (level * np.linalg.norm(L) / np.linalg.norm(E)) * E if level > 0 else L
    return Planted(X.astype(dtype), T.astype(dtype), level)


def dense_tensors(min_order: int = 2, max_order: int = 4, min_dim: int = 1, max_dim: int = 6,
                  min_sigma: float = 1e-2, noise_levels=(0.0, 1e-10, 1e-4, 1e-2), dtype=np.float64):
    """Dense tensors with a planted multilinear spectrum: the ``X`` of :func:`planted_tensors`."""
    return planted_tensors(min_order, max_order, min_dim, max_dim, min_sigma, noise_levels, dtype).map(
        lambda p: p.X)


class ConvConfig(NamedTuple):
    """A conv2d configuration in PyTorch's layout, with the seed of its data.

    ``x_shape = (N, C_in, H, W)``, ``w_shape = (C_out, C_in, kh, kw)``; ``stride``, ``padding``
    and ``dilation`` are pairs. Another implementation can be run on :meth:`arrays` and compared
    with ``tucker_ref.nn.functional.conv2d`` / ``conv2d_backward``.
    """

    x_shape: tuple
    w_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    seed: int

    @property
    def out_shape(self) -> tuple:
        """``(N, C_out, P, Q)`` with ``P = floor((H + 2p − d(kh − 1) − 1)/s) + 1`` (same for ``Q``)."""
        spatial = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                        zip(self.x_shape[2:], self.w_shape[2:], self.stride, self.padding, self.dilation))
        return (self.x_shape[0], self.w_shape[0]) + spatial

    def kwargs(self) -> dict:
        """``dict(stride=…, padding=…, dilation=…)`` for the conv functions."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def arrays(self, dtype=np.float64):
        """``(x, w, b, dy)``: Gaussian from ``default_rng(seed)``; ``dy`` (of :attr:`out_shape`) is a
        random upstream gradient, never all ones (those hide transposition bugs)."""
        rng = np.random.default_rng(self.seed)
        return tuple(rng.standard_normal(shape).astype(dtype) for shape in
                     (self.x_shape, self.w_shape, self.w_shape[:1], self.out_shape))


@st.composite
def conv_configs(draw, max_batch: int = 3, max_channels: int = 4, max_kernel: int = 4, max_stride: int = 3,
                 max_padding: int = 2, max_dilation: int = 3, max_extra: int = 5):
    """:class:`ConvConfig` covering the whole (shape, stride, padding, dilation) space.

    Each of stride, padding and dilation is drawn per axis (unequal pairs included), kernels
    independently per axis (square and not). The spatial size is the smallest in which the
    dilated kernel fits, ``max(1, d(k − 1) + 1 − 2p)``, plus ``0 … max_extra`` rows: every draw
    is valid (no rejection), and sizes where the stride does not divide the span (the floor
    case), batch 1 and single channels are all reachable.
    """
    n = draw(st.integers(1, max_batch))
    c_in, c_out = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))

    def pair(lo, hi):
        return tuple(draw(st.integers(lo, hi)) for _ in range(2))

    kernel = pair(1, max_kernel)
    stride, padding, dilation = pair(1, max_stride), pair(0, max_padding), pair(1, max_dilation)
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, max_extra))
                 for k, p, d in zip(kernel, padding, dilation))
    return ConvConfig((n, c_in) + size, (c_out, c_in) + kernel, stride, padding, dilation, draw(seeds()))
