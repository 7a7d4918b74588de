"""Shared pieces of the validation scripts: command line, output files, fits, plots, problems.

Every script in ``validation/`` is run as ``python validation/NAME.py --out DIR [--quick]``
and builds its parser with :func:`parse_args`; it writes its table with :func:`write_csv`,
its fitted numbers with :func:`write_json` and its figures through :func:`new_figure` /
:func:`save_figure` (matplotlib's object API on the Agg canvas: no pyplot state, no display).

The synthetic problem of the approximation and robustness experiments lives here too, so
both scripts measure the same thing:

:class:`KroneckerSumQuadratic`
    ``L(W) = ½⟨W, 𝓗W⟩ − ⟨B, W⟩`` with the Kronecker-sum operator ``𝓗W = Σ_i W ×_i H_i``
    (``H_i`` symmetric positive semidefinite). Its gradient flow ``Ẇ = −𝓗W + B`` is solved in
    closed form in the eigenbasis of the ``H_i``; with ``B = 0`` the flow is
    ``W(t) = W(0) ×_1 e^{−tH_1} ⋯ ×_d e^{−tH_d}``, which keeps the multilinear rank, and the
    gradient ``Σ_i Y ×_i H_i`` is tangent to the Tucker manifold at every point ``Y``
    (``ε(Y) = 0``): the flow and its projection coincide.

This module is not part of the package (the scripts are run from a checkout); it imports
``tucker_ref`` only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from tucker_ref.checks import as_float_array, check_positive_int
from tucker_ref.integrators.baselines import full_sgd_step
from tucker_ref.testing.problems import Problem
from tucker_ref.testing.strategies import random_orthonormal
from tucker_ref.tucker import TuckerTensor, mode_product, multi_mode_product

#: Significant digits of every number the scripts print and write.
DIGITS = 4


# ---------------------------------------------------------------------------------------
# command line and output files
# ---------------------------------------------------------------------------------------
def parse_args(doc: str, argv=None) -> argparse.Namespace:
    """``--out DIR`` (required), ``--quick`` (a smoke run of a few seconds), ``--seed``.

    ``doc`` is the script's module docstring; its first line becomes the description.
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for the table, JSON and PNG files")
    parser.add_argument("--quick", action="store_true", help="small sweep (smoke test, a few seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of np.random.default_rng (default 0)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def fmt(x, digits: int = DIGITS) -> str:
    """``x`` with ``digits`` significant digits (``"None"`` for ``None``, ints unchanged)."""
    if x is None:
        return "None"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def _plain(value):
    """JSON/CSV-ready value: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def write_csv(rows: list[dict], path) -> Path:
    """Write ``rows`` (dicts with the same keys) as CSV; floats with :data:`DIGITS` digits.

    Tuple/list values (ranks) are written as ``"2x2x2"``.
    """
    if not rows:
        raise ValueError("rows must be a non-empty list of dicts (the table to write)")
    path = Path(path)
    fields = list(rows[0])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            out = {}
            for key in fields:
                v = row[key]
                if isinstance(v, (list, tuple)):
                    v = "x".join(str(int(r)) for r in v)
                elif isinstance(v, (float, np.floating)):
                    v = fmt(v)
                out[key] = v
            writer.writerow(out)
    return path


def write_json(obj, path) -> Path:
    """Write ``obj`` (dicts, lists, numbers, numpy scalars/arrays) as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(_plain(obj), indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns=None) -> None:
    """Print ``rows`` as an aligned text table (numbers with :data:`DIGITS` digits)."""
    columns = list(rows[0]) if columns is None else list(columns)
    cells = [list(columns)]
    for row in rows:
        line = []
        for c in columns:
            v = row[c]
            line.append("x".join(str(int(r)) for r in v) if isinstance(v, (list, tuple)) else
                        (v if isinstance(v, str) else fmt(v)))
        cells.append(line)
    widths = [max(len(line[k]) for line in cells) for k in range(len(columns))]
    for line in cells:
        print("  " + "  ".join(s.rjust(w) for s, w in zip(line, widths)))


# ---------------------------------------------------------------------------------------
# fits
# ---------------------------------------------------------------------------------------
def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit ``log y = p log x + c``; returns ``(p, e^c)`` (so ``y ≈ e^c x^p``).

    Needs at least two points with ``x, y > 0``; anything else is a ``ValueError`` (a slope
    fitted through zeros or NaNs would be meaningless).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError(f"x and y must be finite and positive for a log-log fit, got x={x}, y={y}")
    p, c = np.polyfit(np.log(x), np.log(y), 1)
    return float(p), float(math.exp(c))


def report_fit(label: str, measured: float, predicted: float, note: str = "") -> dict:
    """Print ``label: measured … predicted …`` and return it as a dict for the JSON file."""
    print(f"  {label}: measured {fmt(measured)}, predicted {fmt(predicted)}" + (f"  ({note})" if note else ""))
    return {"measured": measured, "predicted": predicted, "note": note}


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def new_figure(ncols: int = 1, nrows: int = 1, size=(5.2, 4.0)):
    """``(fig, axes)``: a matplotlib ``Figure`` on the Agg canvas and its axes as a flat array."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def save_figure(fig, out, name: str) -> Path:
    """Save ``fig`` as ``out/name.png`` (110 dpi) and return the path."""
    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------
# problem and starting points
# ---------------------------------------------------------------------------------------
def random_psd(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Symmetric ``n × n`` matrix with eigenvalues uniform in ``[low, high]`` and Haar eigenvectors."""
    V = random_orthonormal(rng, n, n)
    return (V * rng.uniform(low, high, n)) @ V.T


def superdiagonal_core(sigmas, d: int) -> np.ndarray:
    """Core ``C[k, …, k] = σ_k`` (zeros elsewhere), shape ``(r,)*d``.

    Every unfolding ``Mat_i(C)`` has exactly the singular values ``σ`` (its rows are ``σ_k``
    times distinct unit vectors), which is how the robustness sweep sets ``σ_min``.
    """
    sigmas = as_float_array(sigmas, "sigmas", ndim=1)
    if np.any(sigmas <= 0):
        raise ValueError(f"sigmas must be positive (full-rank core unfoldings), got {sigmas}")
    r = sigmas.size
    C = np.zeros((r,) * d)
    C[(np.arange(r),) * d] = sigmas
    return C


def kronecker_sum(W, H) -> np.ndarray:
    """``𝓗W = Σ_i W ×_i H_i`` (``H_i`` square, ``n_i × n_i``)."""
    out = np.zeros_like(W)
    for i, Hi in enumerate(H):
        out = out + mode_product(W, Hi, i)
    return out


class KroneckerSumQuadratic(Problem):
    """``L(W) = ½⟨W, 𝓗W⟩ − ⟨B, W⟩``, ``𝓗W = Σ_i W ×_i H_i``; gradient ``𝓗W − B``.

    With ``H_i = V_i diag(λ_i) V_i^T``, ``𝓗`` is diagonal in the coordinates
    ``W̃ = W ×_i V_i^T`` with entries ``D[k_1, …, k_d] = Σ_i λ_{i,k_i}``; hence the smoothness
    constant is ``max D = Σ_i λ_max(H_i)`` exactly and the loss is convex (``H_i ⪰ 0`` is
    required). The gradient flow ``Ẇ = −𝓗W + B`` has the closed form (:meth:`flow`)

        W̃(t) = e^{−tD} ∘ W̃(0) + φ_t(D) ∘ B̃,   φ_t(D) = (1 − e^{−tD})/D   (= t where D = 0).

    Parameters
    ----------
    H : list of d symmetric positive semidefinite ``(n_i × n_i)`` matrices
    B : ndarray of shape ``(n_1, …, n_d)``, optional (default zero)
    """

    def __init__(self, H, B=None):
        self.H, self.V, self.eigenvalues = [], [], []
        for i, Hi in enumerate(H):
            Hi = as_float_array(Hi, f"H[{i}]", ndim=2)
            if Hi.shape[0] != Hi.shape[1] or not np.allclose(Hi, Hi.T, rtol=0, atol=1e-12 * max(1.0, np.abs(Hi).max())):
                raise ValueError(f"H[{i}] must be a symmetric square matrix, got shape {Hi.shape}")
            lam, V = np.linalg.eigh(Hi)
            if lam[0] < -1e-12 * max(1.0, abs(lam[-1])):
                raise ValueError(f"H[{i}] must be positive semidefinite, got smallest eigenvalue {lam[0]:.3e}")
            self.H.append(Hi)
            self.V.append(V)
            self.eigenvalues.append(np.clip(lam, 0.0, None))
        self.shape = tuple(Hi.shape[0] for Hi in self.H)
        d = len(self.H)
        self.D = sum(lam.reshape([-1 if j == i else 1 for j in range(d)]) for i, lam in enumerate(self.eigenvalues))
        self.B = np.zeros(self.shape) if B is None else self.as_dense(B, "B")
        self.smoothness = float(self.D.max())
        self.smoothness_is_exact = True
        self.convex = True

    def loss(self, W) -> float:
        W = self.as_dense(W)
        return float(0.5 * np.vdot(W, kronecker_sum(W, self.H)) - np.vdot(self.B, W))

    def gradient(self, W) -> np.ndarray:
        W = self.as_dense(W)
        return kronecker_sum(W, self.H) - self.B

    def flow(self, W0, t: float) -> np.ndarray:
        """Exact solution ``W(t)`` of ``Ẇ = −∇L(W)``, ``W(0) = W0`` (dense or Tucker)."""
        W0 = self.as_dense(W0, "W0")
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"t must be a finite time >= 0, got {t!r}")
        Wt = multi_mode_product(W0, self.V, transpose=True)
        Bt = multi_mode_product(self.B, self.V, transpose=True)
        decay = np.exp(-t * self.D)
        phi = np.where(self.D > 0, -np.expm1(-t * self.D) / np.where(self.D > 0, self.D, 1.0), t)
        return multi_mode_product(decay * Wt + phi * Bt, self.V)


def block_operator(rng: np.random.Generator, shape, block, eig_range=(0.0, 2.0)) -> list:
    """``H_i = blockdiag(H_i^a, 0)``: a random PSD block on the first ``block[i]`` coordinates.

    Tucker tensors whose factors live in the first ``block[i]`` coordinates stay there under
    the flow and under every integrator; a ``B`` supported on the complementary coordinates of
    every mode is then orthogonal to every tangent space they visit (see
    :func:`normal_tensor`).
    """
    H = []
    for n, m in zip(shape, block):
        Hi = np.zeros((n, n))
        Hi[:m, :m] = random_psd(rng, m, *eig_range)
        H.append(Hi)
    return H


def normal_tensor(shape, block) -> np.ndarray:
    """Unit tensor ``N = e_{n_1} ⊗ ⋯ ⊗ e_{n_d}`` (last coordinate of every mode, outside every block).

    For ``Y = C ×_i U_i`` with ``U_i`` supported on the first ``block[i] < n_i`` coordinates,
    ``N ×_i U_i^T = 0`` and ``Mat_i(N ×_{j≠i} U_j^T) = 0`` (``d ≥ 2``), so ``P(Y)N = 0`` and
    ``‖(I − P(Y))εN‖ = ε`` exactly: a normal component of controlled size.
    """
    if any(m >= n for n, m in zip(shape, block)):
        raise ValueError(f"block must leave at least one coordinate free in every mode, got shape {shape}, "
                         f"block {block}")
    N = np.zeros(shape)
    N[tuple(n - 1 for n in shape)] = 1.0
    return N


def planted_point(rng: np.random.Generator, shape, sigmas, block=None, *, rotate_core: bool = False) -> TuckerTensor:
    """``Y0 = C ×_i U_i`` with the superdiagonal core of ``sigmas`` (normalised to ``‖C‖ = 1``)
    and Haar factors supported on the first ``block[i]`` coordinates (default: all).

    ``rotate_core`` replaces ``C`` by ``C ×_i Q_i`` with Haar orthogonal ``Q_i``: every unfolding
    keeps the singular values ``sigmas`` (it is multiplied by orthogonal matrices on both
    sides) but the core is dense, so no computation can exploit its sparsity.
    """
    d = len(shape)
    block = shape if block is None else block
    C = superdiagonal_core(np.asarray(sigmas, dtype=np.float64) / np.linalg.norm(sigmas), d)
    r = C.shape[0]
    if rotate_core:
        C = multi_mode_product(C, [random_orthonormal(rng, r, r) for _ in range(d)])
    factors = []
    for n, m in zip(shape, block):
        U = np.zeros((n, r))
        U[:m] = random_orthonormal(rng, m, r)
        factors.append(U)
    return TuckerTensor(C, factors)


def n_steps(T: float, lr: float) -> int:
    """Number of steps ``K = T/λ``; ``T/λ`` must be an integer to rounding (a fixed final time)."""
    K = round(T / lr)
    if K < 1 or abs(K * lr - T) > 1e-9 * T:
        raise ValueError(f"T/lr must be a positive integer so that every run ends at t = T, got T={T}, lr={lr}")
    return check_positive_int(K, "T/lr")


# ---------------------------------------------------------------------------------------
# trajectories
# ---------------------------------------------------------------------------------------
def run_steps(step, Y0, K: int, *, keep_path: bool = False):
    """Apply ``Y ← step(Y)[0]`` ``K`` times; ``step`` returns ``(Y_new, report)``.

    Returns ``(Y_K, reports, path)`` with ``path`` the dense iterates ``[Y_0, …, Y_K]`` when
    ``keep_path`` (else ``None``).
    """
    Y, reports = Y0, []
    path = [Y0.full()] if keep_path else None
    for _ in range(check_positive_int(K, "K")):
        Y, report = step(Y)
        reports.append(report)
        if keep_path:
            path.append(Y.full())
    return Y, reports, path


def sgd_path(problem, W0, lr: float, K: int) -> list:
    """Full SGD iterates ``W_{k+1} = W_k − λ∇L(W_k)`` (``baselines.full_sgd_step``), ``[W_0, …, W_K]``."""
    W = problem.as_dense(W0, "W0")
    path = [W]
    for _ in range(check_positive_int(K, "K")):
        W, _ = full_sgd_step(W, problem.gradient(W), lr)
        path.append(W)
    return path
