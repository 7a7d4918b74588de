"""Losses with known smoothness, for the property tests of the integrators (docs/theory.md §5).

Every problem ``p`` offers

* ``p.loss(W) -> float`` and ``p.gradient(W) -> ndarray`` on dense tensors of ``p.shape``;
* ``p.smoothness`` -- a constant ``L`` with ``‖∇L(W) − ∇L(V)‖ ≤ L‖W − V‖``;
  ``p.smoothness_is_exact`` says whether it is the smallest such constant;
* ``p.convex`` -- whether the loss is convex (the approximation recursion of docs/theory.md §5 then has
  factor 1 for ``λ ≤ 2/L``);
* ``p.grad_callable(point)`` and ``p.loss_callable(point)`` -- the same at a
  :class:`~tucker_ref.tucker.TuckerTensor` (or dense) point: the gradient callable and the
  ``loss=`` argument of the integrator steps.

``vec(W)`` is ``W.ravel()`` (C order) throughout. The classes:

:class:`QuadraticRegression`
    ``½‖A vec(W) − b‖²``, ``L = σ_max(A)²`` exactly.
:class:`TuckerRegression`
    The same with ``b = A vec(W*)`` for a planted Tucker tensor ``W*`` and an injective ``A``
    (so ``W*`` is the unique minimiser): the rank-recovery problem.
:class:`SoftmaxRegression`
    Mean cross-entropy of a linear classifier whose weight matrix is ``W`` reshaped; ``L`` is
    an upper bound (derived in the class docstring).
:class:`LinearLoss` and :class:`MovingTarget`
    ``L_k(W) = −⟨W, A_{k+1} − A_k⟩/λ`` for a curve ``A(t)`` of fixed multilinear rank: one
    gradient step of size ``λ`` from ``A_k`` lands exactly on ``A_{k+1}`` (docs/theory.md §5,
    exactness).

A measurement helper serves the guarantee tests: :func:`subspace_projection` (``Π`` onto
``V = ⊗ span Û_i``, the bases from :func:`tucker_ref.integrators.steps.augmented_bases`).

Package code never imports this module (it is part of ``tucker_ref.testing``; the random
constructors reuse the core and factor builders of :mod:`tucker_ref.testing.strategies`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..checks import as_float_array, check_instance, check_nonneg, check_positive_int, check_ranks, check_rng
from ..truncation import feasible_ranks, is_feasible
from ..tucker import TuckerTensor, multi_mode_product, random_orthonormal, random_tucker, unfold
from .strategies import conditioned_core


def _check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {shape!r}") from None
    if not shape:
        raise ValueError(f"{name} must have at least one entry, got ()")
    return tuple(check_positive_int(n, f"{name}[{i}]") for i, n in enumerate(shape))


def _check_step(lr) -> float:
    lr = check_nonneg(lr, "lr", allow_none=False)
    if lr == 0:
        raise ValueError("lr must be > 0 (the step losses divide by it)")
    return lr


class Problem:
    """Base class: shape handling and the point-wise callables shared by every problem.

    Subclasses set ``shape``, ``smoothness``, ``smoothness_is_exact``, ``convex`` and implement
    :meth:`loss` and :meth:`gradient` on dense tensors (:meth:`as_dense` converts and checks a point).
    """

    shape: tuple[int, ...]
    smoothness: float
    smoothness_is_exact: bool
    convex: bool

    def as_dense(self, W, name: str = "W") -> np.ndarray:
        """``W`` (dense, or a ``TuckerTensor``, which is formed) as a validated dense array of ``shape``.

        ``name`` is what the error messages call the argument.
        """
        if isinstance(W, TuckerTensor):
            W = W.full()
        W = as_float_array(W, name)
        if W.shape != self.shape:
            raise ValueError(f"{name} must have shape {self.shape}, got {W.shape}")
        return W

    def loss(self, W) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def gradient(self, W) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad_callable(self, point) -> np.ndarray:
        """Dense gradient ``∇L`` at a ``TuckerTensor`` (or dense) point: the integrators' callable."""
        return self.gradient(self.as_dense(point, "point"))

    def loss_callable(self, point) -> float:
        """``L`` at a ``TuckerTensor`` (or dense) point: the integrators' ``loss=`` argument."""
        return self.loss(self.as_dense(point, "point"))


class QuadraticRegression(Problem):
    """Least squares ``L(W) = ½‖A vec(W) − b‖²`` with ``∇L(W) = Ten(Aᵀ(A vec(W) − b))``.

    The Hessian is ``AᵀA``, so ``L = σ_max(A)²`` is the exact smoothness constant
    (``smoothness_is_exact = True``) and the loss is convex.

    Parameters
    ----------
    A : ndarray, shape ``(m, N)`` with ``N = ∏ shape``
    b : ndarray, shape ``(m,)``
    shape : sequence of int, the tensor shape of ``W``
    """

    def __init__(self, A, b, shape):
        self.shape = _check_shape(shape)
        N = math.prod(self.shape)
        self.A = as_float_array(A, "A", ndim=2)
        if self.A.shape[1] != N:
            raise ValueError(f"A must have prod(shape) = {N} columns (one per entry of W), got shape {self.A.shape}")
        self.b = as_float_array(b, "b", ndim=1)
        if self.b.shape[0] != self.A.shape[0]:
            raise ValueError(f"b must have m = {self.A.shape[0]} entries (the rows of A), got shape {self.b.shape}")
        self.smoothness = float(np.linalg.norm(self.A, 2) ** 2)
        self.smoothness_is_exact = True
        self.convex = True

    @classmethod
    def random(cls, shape, m: int, rng: np.random.Generator) -> "QuadraticRegression":
        """Gaussian ``A`` (entries ``N(0, 1/m)``) and ``b`` (entries ``N(0, 1)``), ``m`` rows."""
        shape = _check_shape(shape)
        m = check_positive_int(m, "m")
        rng = check_rng(rng)
        A = rng.standard_normal((m, math.prod(shape))) / math.sqrt(m)
        return cls(A, rng.standard_normal(m), shape)

    def residual(self, W) -> np.ndarray:
        """``A vec(W) − b``, shape ``(m,)``."""
        return self.A @ self.as_dense(W).ravel() - self.b

    def loss(self, W) -> float:
        r = self.residual(W)
        return 0.5 * float(r @ r)

    def gradient(self, W) -> np.ndarray:
        return (self.A.T @ self.residual(W)).reshape(self.shape)


class TuckerRegression(QuadraticRegression):
    """Least squares with a planted Tucker solution: ``b = A vec(W*)``, ``A`` injective.

    With ``m ≥ N`` rows and full column rank, ``W*`` is the unique minimiser (``L(W*) = 0``)
    and the loss is ``σ_min(A)²``-strongly convex. :attr:`tau_bound` is
    ``min_i σ_{i,r*_i}(W*)/‖W*‖`` (the smallest kept mode singular value of the planted tensor,
    relative): a relative truncation tolerance below it keeps the planted ranks near ``W*``
    (docs/theory.md §5, rank recovery).

    Parameters
    ----------
    A : ndarray, shape ``(m, N)``, ``m ≥ N``, full column rank (checked)
    planted : TuckerTensor, the solution ``W*``; its ranks must be feasible and its core
        unfoldings of full row rank (checked), so that its multilinear rank is ``planted.ranks``
    """

    def __init__(self, A, planted: TuckerTensor):
        check_instance(planted, TuckerTensor, "planted")
        W_star = planted.full()
        A = as_float_array(A, "A", ndim=2)
        if A.shape[1] != W_star.size:
            raise ValueError(f"A must have prod(shape) = {W_star.size} columns (one per entry of W*), "
                             f"got shape {A.shape}")
        super().__init__(A, A @ W_star.ravel(), planted.shape)
        m, N = self.A.shape
        s = np.linalg.svd(self.A, compute_uv=False)
        if m < N or s[-1] <= max(m, N) * np.finfo(np.float64).eps * s[0]:
            raise ValueError(f"A must be injective (m >= N = {N} rows and full column rank), got shape {A.shape} "
                             f"with sigma_min/sigma_max = {s[-1] / s[0]:.1e}")
        self.strong_convexity = float(s[-1] ** 2)
        self.planted = planted
        self.W_star = W_star
        svals = [np.linalg.svd(unfold(W_star, i), compute_uv=False) for i in range(W_star.ndim)]
        for i, (sv, r) in enumerate(zip(svals, planted.ranks)):
            if len(sv) < r or sv[r - 1] <= 100 * np.finfo(np.float64).eps * sv[0]:
                raise ValueError(f"planted must have multilinear rank {planted.ranks}: mode {i} of W* has "
                                 f"numerical rank below {r}")
        self.planted_ranks = planted.ranks
        self.planted_singular_values = svals
        norm = float(np.linalg.norm(W_star))
        self.tau_bound = min(float(sv[r - 1]) for sv, r in zip(svals, planted.ranks)) / norm

    @classmethod
    def random(cls, shape, ranks, rng: np.random.Generator, *, oversampling: float = 4.0,
               min_sigma: float = 0.3) -> "TuckerRegression":
        """Planted ``W* = C ×_i U_i`` and a Gaussian ``A`` with ``m = ceil(oversampling·N)`` rows.

        The core comes from :func:`tucker_ref.testing.strategies.conditioned_core`: every
        unfolding has full row rank with ``cond(Mat_i(C)) ≤ 1/min_sigma`` (``min_sigma ≤ 0.5``),
        ``‖C‖ = 1``. ``oversampling ≥ 1`` keeps ``A`` injective; 4 gives ``cond(A) ≈ 3``.
        """
        shape = _check_shape(shape)
        ranks = check_ranks(ranks, shape)
        if not is_feasible(ranks):
            raise ValueError(f"ranks must be feasible (r_i <= prod_(j!=i) r_j), got {ranks}; "
                             f"the largest feasible ranks below them are {feasible_ranks(ranks)}")
        rng = check_rng(rng)
        oversampling = check_nonneg(oversampling, "oversampling", allow_none=False)
        if oversampling < 1:
            raise ValueError(f"oversampling must be >= 1 (A needs m >= N rows to be injective), got {oversampling}")
        min_sigma = check_nonneg(min_sigma, "min_sigma", allow_none=False)
        planted = random_tucker(rng, shape, ranks, core=conditioned_core(rng, ranks, min_sigma))
        N = math.prod(shape)
        m = math.ceil(oversampling * N)
        return cls(rng.standard_normal((m, N)) / math.sqrt(m), planted)


class SoftmaxRegression(Problem):
    """Mean cross-entropy of a linear softmax classifier whose weights are ``W`` reshaped.

    ``W`` has shape ``(K, n_2, …, n_d)``: ``K`` classes, ``p = n_2⋯n_d`` features. With
    ``X`` of shape ``(s, p)`` and labels ``y``, logits ``Z = X Mat_1(W)ᵀ`` (``Mat_1`` is the
    C-order unfolding of mode 0, i.e. ``W.reshape(K, p)``), and

        L(W) = (1/s) Σ_n [logsumexp(z_n) − z_{n, y_n}],
        ∇L(W) = Ten((1/s) (softmax(Z) − Y)ᵀ X)   (Y one-hot).

    Smoothness (an upper bound, ``smoothness_is_exact = False``): the Hessian of the
    cross-entropy in the logits is ``H_n = diag(π_n) − π_nπ_nᵀ``, and
    ``vᵀH_nv = Var_{π_n}(v) ≤ (max v − min v)²/4 ≤ ‖v‖²/2`` (a variance is at most a quarter
    of the squared range, and ``(v_a − v_b)² ≤ 2(v_a² + v_b²)``). So for a direction ``V``
    (``K × p``), ``D²L[V, V] = (1/s) Σ_n (Vx_n)ᵀH_n(Vx_n) ≤ (1/(2s)) ‖VXᵀ‖_F² ≤
    (‖X‖_2²/(2s)) ‖V‖_F²``, giving ``L = ‖X‖_2²/(2s)``. The loss is convex (each ``H_n ⪰ 0``).

    Parameters
    ----------
    X : ndarray, shape ``(s, p)``
    y : integer array, shape ``(s,)``, entries in ``[0, K)``
    shape : sequence of int, ``(K, n_2, …, n_d)`` with ``n_2⋯n_d = p`` and ``d ≥ 2``
    """

    def __init__(self, X, y, shape):
        self.shape = _check_shape(shape)
        if len(self.shape) < 2:
            raise ValueError(f"shape must have at least two modes (classes, features...), got {self.shape}")
        self.n_classes = self.shape[0]
        p = math.prod(self.shape[1:])
        self.X = as_float_array(X, "X", ndim=2)
        if self.X.shape[1] != p:
            raise ValueError(f"X must have prod(shape[1:]) = {p} columns (features), got shape {self.X.shape}")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != self.X.shape[0] or y.dtype.kind not in "iu":
            raise ValueError(f"y must be an integer array of shape ({self.X.shape[0]},), got {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"y must hold class indices in [0, {self.n_classes}), got range [{y.min()}, {y.max()}]")
        self.y = y.astype(np.int64)
        s = self.X.shape[0]
        self.smoothness = float(np.linalg.norm(self.X, 2) ** 2 / (2 * s))
        self.smoothness_is_exact = False
        self.convex = True

    @classmethod
    def random(cls, shape, n_samples: int, rng: np.random.Generator) -> "SoftmaxRegression":
        """Gaussian features and uniformly drawn labels."""
        shape = _check_shape(shape)
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_rng(rng)
        X = rng.standard_normal((n_samples, math.prod(shape[1:])))
        return cls(X, rng.integers(0, shape[0], n_samples), shape)

    def _margins(self, W):
        """``(M, E, T)`` with ``d_{nj} = z_{nj} − z_{n,y_n}``, ``M_n = max_j d_{nj} ≥ 0``,
        ``E_{nj} = e^{d_{nj} − M_n}`` for ``j ≠ y_n`` (0 at the label) and ``T_n = e^{−M_n} + Σ_j E_{nj}``.

        Written in margins so that a confident classifier (loss ~1e-8 from logits of size ~10)
        is evaluated to relative, not absolute, rounding: ``CE_n = log1p(Σ_{j≠y} e^{d_j})`` when
        the label is the arg-max, and ``p_y − 1 = −Σ_{j≠y} E_j / T`` without cancellation.
        """
        Z = self.X @ self.as_dense(W).reshape(self.n_classes, -1).T
        rows = np.arange(Z.shape[0])
        D = Z - Z[rows, self.y][:, None]
        M = D.max(axis=1)
        E = np.exp(D - M[:, None])
        E[rows, self.y] = 0.0
        return M, E, np.exp(-M) + E.sum(axis=1)

    def loss(self, W) -> float:
        M, E, T = self._margins(W)
        others = E.sum(axis=1)
        # CE_n = logsumexp(d_n) = M + log(T); at M = 0 this is log1p(Σ_{j≠y} e^{d_j}) exactly.
        ce = np.where(M > 0, M + np.log(T), np.log1p(others))
        return float(np.mean(ce))

    def gradient(self, W) -> np.ndarray:
        M, E, T = self._margins(W)
        P = E / T[:, None]
        rows = np.arange(P.shape[0])
        P[rows, self.y] = -E.sum(axis=1) / T  # softmax_y − 1, without cancellation
        return (P.T @ self.X / self.X.shape[0]).reshape(self.shape)


class LinearLoss(Problem):
    """``L(W) = −⟨W, D⟩`` with constant gradient ``−D``: smoothness 0 (exact), convex."""

    def __init__(self, D):
        self.D = as_float_array(D, "D")
        self.shape = self.D.shape
        self.smoothness = 0.0
        self.smoothness_is_exact = True
        self.convex = True

    def loss(self, W) -> float:
        return -float(np.vdot(self.as_dense(W), self.D))

    def gradient(self, W) -> np.ndarray:
        self.as_dense(W)
        return -self.D


class MovingTarget:
    """A curve ``A(t) = C(t) ×_i U_i(t)`` of fixed multilinear rank and its step losses (theory.md §5).

    ``U_i(t) = exp(tΩ_i) U_i(0)`` with skew-symmetric ``Ω_i`` (orthonormal for all ``t``) and
    ``C(t) = C(0) + t Ċ``. At ``t_k = kλ`` the step loss is
    ``L_k(W) = −⟨W, A(t_{k+1}) − A(t_k)⟩/λ`` (:meth:`step_loss`): one explicit Euler step of
    size ``λ`` from ``A(t_k)`` gives ``A(t_k) + (A(t_{k+1}) − A(t_k)) = A(t_{k+1})``, and both
    BUG integrators reproduce it because the new mode-``i`` span of ``A(t_{k+1})`` lies in
    ``span[U_i, ∇_{K_i}L]``.

    The rank is fixed for ``t ∈ [0, t_max]`` when every ``Mat_i(C(t))`` keeps full row rank;
    :meth:`random` chooses ``‖Ċ‖_F ≤ σ_min/(2 t_max)`` (``σ_min`` the smallest singular value of
    all unfoldings of ``C(0)``) so that, by Weyl's inequality, it does.

    Parameters
    ----------
    core : ndarray ``C(0)``, shape ``(r_1, …, r_d)``
    core_rate : ndarray ``Ċ``, same shape
    factors : list of orthonormal ``(n_i × r_i)`` matrices ``U_i(0)``
    generators : list of skew-symmetric ``(n_i × n_i)`` matrices ``Ω_i``
    lr : float > 0, the step ``λ`` (the integrator must use the same)
    """

    def __init__(self, core, core_rate, factors, generators, lr):
        self.start = TuckerTensor(core, factors)
        self.core_rate = as_float_array(core_rate, "core_rate")
        if self.core_rate.shape != self.start.ranks:
            raise ValueError(f"core_rate must have the core's shape {self.start.ranks}, got {self.core_rate.shape}")
        if len(generators) != self.start.ndim:
            raise ValueError(f"generators must have one matrix per mode ({self.start.ndim}), got {len(generators)}")
        self.generators = []
        for i, (Om, n) in enumerate(zip(generators, self.start.shape)):
            Om = as_float_array(Om, f"generators[{i}]", ndim=2)
            if Om.shape != (n, n) or not np.allclose(Om, -Om.T, rtol=0, atol=1e-14 * max(1.0, np.abs(Om).max())):
                raise ValueError(f"generators[{i}] must be a skew-symmetric ({n}, {n}) matrix, got shape {Om.shape}")
            self.generators.append(Om)
        self.lr = _check_step(lr)
        # exp(tΩ) through the eigendecomposition of the Hermitian iΩ = V diag(μ) V^H:
        # exp(tΩ) = V diag(e^{−itμ}) V^H, unitary to rounding for every t.
        self._spectra = [np.linalg.eigh(1j * Om) for Om in self.generators]
        self.shape = self.start.shape
        self.ranks = self.start.ranks

    @classmethod
    def random(cls, shape, ranks, lr, rng: np.random.Generator, *, steps: int = 10, speed: float = 1.0,
               min_sigma: float = 0.3) -> "MovingTarget":
        """Random curve, rank fixed over ``steps`` steps: ``‖Ω_i‖_2 = speed``, core rate at the Weyl
        bound's half (see the class docstring)."""
        shape = _check_shape(shape)
        ranks = check_ranks(ranks, shape)
        rng = check_rng(rng)
        steps = check_positive_int(steps, "steps")
        speed = check_nonneg(speed, "speed", allow_none=False)
        start = random_tucker(rng, shape, ranks, core=conditioned_core(rng, ranks, min_sigma))
        core = start.core
        gens = []
        for n in shape:
            B = rng.standard_normal((n, n))
            Om = B - B.T
            norm = np.linalg.norm(Om, 2)
            gens.append(Om * (speed / norm) if norm > 0 else Om)
        sigma_min = min(np.linalg.svd(unfold(core, i), compute_uv=False)[-1] for i in range(core.ndim))
        rate = rng.standard_normal(ranks)
        rate *= sigma_min / (2 * steps * _check_step(lr) * np.linalg.norm(rate))
        return cls(core, rate, start.factors, gens, lr)

    def target(self, k) -> TuckerTensor:
        """``A(t_k)``, ``t_k = kλ``, as a Tucker tensor with orthonormal factors."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"k must be a non-negative integer step index, got {k!r}")
        t = k * self.lr
        factors = [((V * np.exp(-1j * t * mu)) @ (V.conj().T @ U)).real
                   for (mu, V), U in zip(self._spectra, self.start.factors)]
        return TuckerTensor(self.start.core + t * self.core_rate, factors)

    def step_loss(self, k) -> LinearLoss:
        """``L_k(W) = −⟨W, A(t_{k+1}) − A(t_k)⟩/λ`` as a :class:`LinearLoss`."""
        return LinearLoss((self.target(k + 1).full() - self.target(k).full()) / self.lr)


# ---------------------------------------------------------------------------------------
# measurement helpers for the guarantee tests
# ---------------------------------------------------------------------------------------
def core_with_mode_spectrum(rng: np.random.Generator, singular_values, m: int | None = None) -> np.ndarray:
    """A core whose mode-0 unfolding has exactly the given singular values ``σ_1 … σ_r``.

    * ``m=None``: order 2, ``C = P diag(σ) R^T`` (``r × r``, Haar ``P``, ``R``); both unfoldings
      have the singular values ``σ``.
    * ``m ≥ r``: order 3, shape ``(r, m, m)``, ``C = Σ_k σ_k p_k ∘ R_k`` with ``R_k = A Π^k B/√m``
      (``Π`` the cyclic shift, ``A``, ``B``, ``[p_k]`` Haar orthogonal). The ``R_k`` are orthonormal
      (``tr(Π^{k−l}) = 0`` for ``0 < |k − l| < m``) and ``R_kR_k^T = R_k^TR_k = I/m``, so
      ``Mat_1(C)Mat_1(C)^T = Mat_2(C)Mat_2(C)^T = (Σσ_k²/m) I``: only mode 0 is ill conditioned,
      which makes the effect of a small ``σ_min(S_0)`` attributable to that mode alone.
    """
    rng = check_rng(rng)
    sv = as_float_array(singular_values, "singular_values", ndim=1)
    r = sv.shape[0]
    if r < 1 or np.any(sv <= 0):
        raise ValueError(f"singular_values must be positive numbers, got {sv}")
    P = random_orthonormal(rng, r, r)
    if m is None:
        return (P * sv) @ random_orthonormal(rng, r, r).T
    m = check_positive_int(m, "m")
    if m < r:
        raise ValueError(f"m must be >= the number of singular values ({r}), got {m}")
    A, B = random_orthonormal(rng, m, m), random_orthonormal(rng, m, m)
    shift = np.roll(np.eye(m), 1, axis=0)
    R = np.stack([A @ np.linalg.matrix_power(shift, k) @ B / math.sqrt(m) for k in range(r)])
    return np.tensordot(P * sv, R, axes=([1], [0]))


def subspace_projection(Z, bases) -> np.ndarray:
    """``Π Z = Z ×_i B_iB_i^T``: orthogonal projection onto ``⊗ span B_i`` (orthonormal ``B_i``)."""
    return multi_mode_product(multi_mode_product(Z, bases, transpose=True), bases)


__all__ = [
    "LinearLoss",
    "MovingTarget",
    "Problem",
    "QuadraticRegression",
    "SoftmaxRegression",
    "TuckerRegression",
    "core_with_mode_spectrum",
    "subspace_projection",
]
