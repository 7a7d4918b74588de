"""Golden files (tucker_ref.golden): the shipped set matches, tampering is caught, the stored
values mean what the manifest says.

The last group re-derives the TDLRT-step, HOSVD and tangent outputs from the stored *inputs*
with plain NumPy formulas (no tucker_ref integrator code), so a golden set that recorded a
wrong computation would fail here even though ``check`` (which recomputes with the same code)
would pass.
"""

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest

from tucker_ref import __version__, golden, truncation
from tucker_ref.cli import main
from tucker_ref.golden import (SCHEMA_VERSION, CaseResult, GoldenError, Tolerance, case_names, check_golden,
                               compare_case, default_golden_dir, load_case, load_manifest, write_golden)
from tucker_ref.golden import cases, wellposed
from tucker_ref.golden.files import file_sha256
from tucker_ref.nn.functional import conv2d, conv2d_weight_backward
from tucker_ref.tucker import fold, multi_mode_product, unfold

# Products and norms of the O(1) stored arrays, recomputed here with other summation orders.
ROUNDING = 1e-12


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A freshly written set (written once per module; tests that tamper copy it first)."""
    directory = tmp_path_factory.mktemp("golden")
    manifest = write_golden(directory)
    return directory, manifest


@pytest.fixture
def copy(written, tmp_path):
    target = tmp_path / "set"
    shutil.copytree(written[0], target)
    return target


def failed(results):
    return {r.name: r for r in results if not r.ok}


def rewrite_npz(path, change):
    """Rewrite an npz with ``change(arrays)`` applied (the manifest's sha256 is left as it was)."""
    with np.load(path) as data:
        arrays = {k: data[k].copy() for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


def update_sha(directory, name):
    manifest_path = directory / golden.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    for case in manifest["cases"]:
        if case["name"] == name:
            case["sha256"] = file_sha256(directory / case["file"])
    manifest_path.write_text(json.dumps(manifest))


def edit_manifest(directory, change):
    path = directory / golden.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------------------
# the shipped set and the writer
# ---------------------------------------------------------------------------------------
def test_shipped_set_matches_the_installed_tucker_ref():
    results = check_golden()
    assert [r.name for r in results] == list(case_names())
    assert failed(results) == {}
    assert all(r.max_rel_error <= 1e-12 for r in results), [(r.name, r.max_rel_error) for r in results]


def test_shipped_set_is_small_and_versioned():
    directory = default_golden_dir()
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert total < 1_000_000
    manifest = load_manifest(directory)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["schema"] == golden.SCHEMA
    assert {p.name for p in directory.iterdir()} == {golden.MANIFEST_NAME} | {c["file"] for c in manifest["cases"]}


def test_manifest_documents_every_array(written):
    directory, manifest = written
    assert manifest["tucker_ref_version"] == __version__
    for field in golden.MANIFEST_FIELDS:
        if not field.startswith("cases[]"):
            assert field in manifest, field
    kinds = set()
    for case in manifest["cases"]:
        kinds.add(case["kind"])
        for field in ("name", "kind", "description", "file", "sha256", "seed", "params", "inputs", "outputs"):
            assert field in case, (case["name"], field)
        inputs, outputs, tolerances = load_case(directory, case["name"])
        for key, meta in case["inputs"].items():
            assert list(inputs[key].shape) == meta["shape"] and meta["dtype"] == "float64"
        for key, meta in case["outputs"].items():
            assert list(outputs[key].shape) == meta["shape"]
            assert meta["comparison"] in golden.COMPARISONS and meta["description"]
            assert tolerances[key] == Tolerance(meta["rtol"], meta["atol"], meta["comparison"])
        for key, value in case["params"].items():
            assert inputs[key] == value
    assert kinds == {"unfold_fold", "mode_products", "hosvd", "tangent_projection", "conv2d", "tucker_conv2d",
                     "tdlrt_step"}


def test_seeds_regenerate_the_shipped_inputs_and_outputs(written):
    """The shipped files are what write_golden produces now (same seeds, same values)."""
    directory, _ = written
    for name in case_names():
        fresh_in, fresh_out, _ = load_case(directory, name)
        shipped_in, shipped_out, tol = load_case(None, name)
        assert fresh_in.keys() == shipped_in.keys()
        for key, value in shipped_in.items():
            if isinstance(value, np.ndarray):
                assert rel(fresh_in[key], value) <= ROUNDING, (name, key)
            else:
                assert fresh_in[key] == value, (name, key)
        assert compare_case(fresh_out, shipped_out, tol, name=name).ok


def test_written_set_checks_clean_and_cli_reports_it(written):
    directory, _ = written
    assert failed(check_golden(directory)) == {}
    out = io.StringIO()
    assert golden.run_command("check", directory, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == len(case_names()) + 1
    assert all(line.rstrip().endswith("ok") for line in lines[:-1])
    assert lines[-1] == f"{len(case_names())} cases, 0 failed"


def test_cli_entry_point(written, capsys):
    assert main(["golden", "check", str(written[0])]) == 0
    assert "0 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["golden", "write"])
    assert exc.value.code == 2


def test_cli_write(tmp_path, capsys):
    assert main(["golden", "write", str(tmp_path / "new")]) == 0
    assert main(["golden", "check", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.count(" ok") == len(case_names())


# ---------------------------------------------------------------------------------------
# tampering, missing files, schema versions
# ---------------------------------------------------------------------------------------
def test_altered_file_fails_on_its_sha256(copy, capsys):
    rewrite_npz(copy / "conv2d_basic.npz", lambda a: a["output/y"].__setitem__((0, 0, 0, 0), a["output/y"][0, 0, 0, 0]
                                                                               + 1e-3))
    bad = failed(check_golden(copy))
    assert list(bad) == ["conv2d_basic"]
    assert "sha256 mismatch" in bad["conv2d_basic"].problems[0]
    assert main(["golden", "check", str(copy)]) == 1
    assert "conv2d_basic" in capsys.readouterr().out.splitlines()[-1]
    with pytest.raises(GoldenError, match="sha256"):
        load_case(copy, "conv2d_basic")
    assert load_case(copy, "conv2d_basic", verify=False)[1]["y"].shape == (2, 4, 4, 4)


@pytest.mark.parametrize("name, group, key", [
    ("tucker_conv2d_strided", "output", "dU_2"),
    ("tdlrt_step_conv", "output", "Y1_full"),
    ("hosvd_tol_3way", "output", "tails"),
    ("tdlrt_step_conv", "input", "target"),
])
def test_tampered_value_with_a_matching_sha256_fails_the_comparison(copy, name, group, key):
    def change(arrays):
        a = arrays[f"{group}/{key}"]
        a.flat[a.size // 2] *= 1 + 1e-6
    rewrite_npz(copy / f"{name}.npz", change)
    update_sha(copy, name)
    bad = failed(check_golden(copy))
    assert list(bad) == [name]
    assert bad[name].max_rel_error > 0
    if group == "output":
        assert bad[name].problems[0].startswith(key)


def test_tampered_rank_fails_exactly(copy):
    rewrite_npz(copy / "sthosvd_tol_4way.npz", lambda a: a["output/ranks"].__setitem__(1, a["output/ranks"][1] + 1))
    update_sha(copy, "sthosvd_tol_4way")
    bad = failed(check_golden(copy))
    assert list(bad) == ["sthosvd_tol_4way"] and bad["sthosvd_tol_4way"].problems[0].startswith("ranks")


def test_missing_file_fails_that_case_only(copy):
    (copy / "tangent_projection_3way.npz").unlink()
    results = check_golden(copy)
    bad = failed(results)
    assert list(bad) == ["tangent_projection_3way"] and "missing file" in bad["tangent_projection_3way"].problems[0]
    assert len(results) == len(case_names())
    assert golden.run_command("check", copy, out=io.StringIO()) == 1


def test_missing_array_in_a_file_fails(copy):
    rewrite_npz(copy / "conv2d_mixed.npz", lambda a: a.pop("output/dx"))
    update_sha(copy, "conv2d_mixed")
    assert "no array output/dx" in failed(check_golden(copy))["conv2d_mixed"].problems[0]


def test_unknown_schema_version_is_rejected(copy):
    edit_manifest(copy, lambda m: m.__setitem__("schema_version", SCHEMA_VERSION + 1))
    with pytest.raises(GoldenError, match="schema_version"):
        check_golden(copy)
    out, err = io.StringIO(), io.StringIO()
    assert golden.run_command("check", copy, out=out, err=err) == 1
    assert "schema_version" in err.getvalue() and out.getvalue() == ""  # errors go to stderr


def test_missing_manifest_and_foreign_json(tmp_path):
    assert golden.run_command("check", tmp_path, out=io.StringIO()) == 1
    (tmp_path / golden.MANIFEST_NAME).write_text(json.dumps({"schema": "something else", "schema_version": 1}))
    with pytest.raises(GoldenError, match="not a tucker_ref golden manifest"):
        load_manifest(tmp_path)


def test_changed_param_fails_and_a_fragile_tau_is_refused(copy, written):
    edit_manifest(copy, lambda m: m["cases"][-1]["params"].__setitem__("lr", m["cases"][-1]["params"]["lr"] * 1.01))
    assert list(failed(check_golden(copy))) == ["tdlrt_step_conv"]
    # A τ whose threshold sits on a dropped tail: the case is no longer well posed.
    inputs, outputs, _ = load_case(written[0], "tdlrt_step_conv")
    tail = float(outputs["tails"][1])
    norm_c1 = float(outputs["threshold"]) / inputs["tau"]
    edit_manifest(copy, lambda m: m["cases"][-1]["params"].__setitem__("tau", 1.1 * tail / norm_c1))
    problems = failed(check_golden(copy))["tdlrt_step_conv"].problems
    assert "not robust" in problems[0]


def test_unknown_kind_fails(copy):
    edit_manifest(copy, lambda m: m["cases"][0].__setitem__("kind", "no_such_kind"))
    assert "unknown kind" in failed(check_golden(copy))["unfold_fold_3way"].problems[0]


# ---------------------------------------------------------------------------------------
# load_case / compare_case as another implementation uses them
# ---------------------------------------------------------------------------------------
def test_compare_case_accepts_the_expected_values_and_rejects_errors_above_tolerance():
    inputs, expected, tol = load_case(None, "tucker_conv2d_basic")
    assert inputs["padding"] == [1, 1] and inputs["x"].dtype == np.float64
    assert compare_case(expected, expected, tol).ok
    for key in expected:
        allowed = tol[key].allowed(expected[key])
        noise = np.random.default_rng(7).standard_normal(expected[key].shape)
        noise *= 2 * allowed / np.linalg.norm(noise)
        result = compare_case({**expected, key: expected[key] + noise}, expected, tol, name="t")
        assert not result.ok and result.worst_output == key and result.problems[0].startswith(key)
        half = compare_case({**expected, key: expected[key] + noise / 4}, expected, tol)
        assert half.ok


def test_compare_case_structure_errors():
    _, expected, tol = load_case(None, "conv2d_basic")
    partial = {"y": expected["y"]}
    assert not compare_case(partial, expected, tol).ok
    assert "missing outputs" in compare_case(partial, expected, tol).problems[0]
    assert compare_case(partial, expected, tol, require_all=False).ok
    assert not compare_case({}, expected, tol, require_all=False).ok
    assert not compare_case({**expected, "extra": 1.0}, expected, tol).ok
    wrong_shape = compare_case({**expected, "db": expected["db"][:-1]}, expected, tol)
    assert not wrong_shape.ok and "shape" in wrong_shape.problems[0]
    nan = expected["dw"].copy()
    nan[0, 0, 0, 0] = np.nan
    assert not compare_case({**expected, "dw": nan}, expected, tol).ok


def test_case_result_line():
    line = CaseResult("c", False, 0.5, "y", {"y": 0.5}, ["y: error 1 > allowed 0"]).line()
    assert line.startswith("c ") and "5.00e-01" in line and "FAIL" in line


def test_unknown_case_name():
    with pytest.raises(GoldenError, match="no case named"):
        load_case(None, "nope")


# ---------------------------------------------------------------------------------------
# the stored values mean what the manifest says (independent NumPy re-derivation)
# ---------------------------------------------------------------------------------------
def projector_ok(P, rank):
    assert rel(P, P.T) <= ROUNDING and rel(P @ P, P) <= 1e-10
    assert abs(np.trace(P) - rank) <= 1e-10


def test_tdlrt_step_case_satisfies_the_step_identities():
    inputs, out, _ = load_case(None, "tdlrt_step_conv")
    C0 = inputs["core"]
    d = C0.ndim
    U = [inputs[f"U_{i}"] for i in range(d)]
    Y0 = multi_mode_product(C0, U)
    geo = {k: tuple(inputs[k]) for k in ("stride", "padding", "dilation")}
    dy = conv2d(inputs["x"], Y0, **geo) - inputs["target"]
    G = conv2d_weight_backward(dy, inputs["x"], Y0.shape[2:], **geo)
    assert rel(out["grad"], G) <= ROUNDING
    assert abs(out["loss_before"] - 0.5 * np.sum(dy**2)) <= ROUNDING * out["loss_before"]
    lr = inputs["lr"]
    for i in range(d):
        M = unfold(C0, i)
        projector_ok(out[f"QQt_{i}"], C0.shape[i])
        assert rel(out[f"QQt_{i}"], np.linalg.pinv(M) @ M) <= 1e-10
        assert rel(out[f"KQt_{i}"], U[i] @ M) <= 1e-10
        mats = [None if j == i else U[j] for j in range(d)]
        N = unfold(multi_mode_product(G, mats, transpose=True), i)
        assert rel(out[f"grad_K_Qt_{i}"], N @ out[f"QQt_{i}"]) <= 1e-10
        P_hat = out[f"U_hat_projector_{i}"]
        projector_ok(P_hat, out["ranks_augmented"][i])
        # U first: span U_i ⊂ span Û_i, and the new directions are those of (I − UU^T) N Q Q^T.
        assert rel(P_hat @ U[i], U[i]) <= 1e-10
        new = N @ out[f"QQt_{i}"] - U[i] @ (U[i].T @ N @ out[f"QQt_{i}"])
        assert rel(P_hat @ new, new) <= 1e-10
        projector_ok(out[f"U1_projector_{i}"], out["ranks_after"][i])
        assert rel(P_hat @ out[f"U1_projector_{i}"], out[f"U1_projector_{i}"]) <= 1e-10
    P_hat = [out[f"U_hat_projector_{i}"] for i in range(d)]
    assert rel(out["C_hat0_full"], Y0) <= 1e-10
    assert rel(out["C_hat1_full"], Y0 - lr * multi_mode_product(G, P_hat)) <= 1e-10
    eta = np.linalg.norm(out["C_hat1_full"] - out["Y1_full"])
    assert abs(eta - out["eta"]) <= 1e-10 * np.linalg.norm(out["C_hat1_full"])
    assert out["eta"] <= np.sqrt(np.sum(out["tails"] ** 2)) * (1 + 1e-12)
    assert rel(out["Y1_full"], multi_mode_product(out["C_hat1_full"], [out[f"U1_projector_{i}"] for i in range(d)])) \
        <= 1e-10
    residual = np.linalg.norm(G - multi_mode_product(G, P_hat))
    assert abs(residual - out["residual_norm"]) <= 1e-10 * np.linalg.norm(G)
    assert abs(np.linalg.norm(multi_mode_product(G, P_hat)) - out["proj_grad_norm"]) <= 1e-10 * np.linalg.norm(G)
    # Containment (docs/theory.md §3) holds in the stored numbers: ‖(I − Π)G‖ ≤ ε and ‖ΠG‖ ≥ ‖PG‖.
    assert out["residual_norm"] <= out["epsilon"] and out["proj_grad_norm"] >= out["tangent_grad_norm"]
    # The case exercises rank adaptation: augmented beyond, and truncated below, the start ranks.
    assert np.all(out["ranks_augmented"] > np.array(C0.shape))
    assert np.all(out["ranks_after"] < out["ranks_augmented"]) and np.all(out["tails"] > 0)
    loss_after = 0.5 * np.sum((conv2d(inputs["x"], out["Y1_full"], **geo) - inputs["target"]) ** 2)
    assert abs(out["loss_after"] - loss_after) <= 1e-10 * loss_after


@pytest.mark.parametrize("name", ["hosvd_tol_3way", "sthosvd_tol_4way"])
def test_hosvd_cases_satisfy_the_truncation_identities(name):
    inputs, out, _ = load_case(None, name)
    X = inputs["X"]
    P = [out[f"projector_{i}"] for i in range(X.ndim)]
    for i, Pi in enumerate(P):
        projector_ok(Pi, out["ranks"][i])
    assert rel(out["reconstruction"], multi_mode_product(X, P)) <= 1e-10
    err = np.linalg.norm(X - out["reconstruction"])
    assert abs(err - out["error"]) <= 1e-10 * np.linalg.norm(X)
    assert out["error"] <= out["certificate"] * (1 + 1e-12)
    assert out["certificate"] <= inputs["tol"] * np.linalg.norm(X)
    assert abs(np.sqrt(np.sum(out["tails"] ** 2)) - out["certificate"]) <= 1e-12 * np.linalg.norm(X)
    if not inputs["sequential"]:
        for i in range(X.ndim):
            s = np.linalg.svd(unfold(X, i), compute_uv=False)
            assert rel(out[f"singular_values_{i}"], s) <= 1e-12


def test_tangent_case_satisfies_the_projection_identities():
    inputs, out, _ = load_case(None, "tangent_projection_3way")
    C, Z = inputs["core"], inputs["Z"]
    U = [inputs[f"U_{i}"] for i in range(C.ndim)]
    PZ = out["projection"]
    assert rel(out["dcore"], multi_mode_product(Z, U, transpose=True)) <= ROUNDING
    dense = multi_mode_product(out["dcore"], U)
    for i in range(C.ndim):
        assert np.linalg.norm(U[i].T @ out[f"dU_{i}"]) <= 1e-12 * np.linalg.norm(out[f"dU_{i}"])
        mats = list(U)
        mats[i] = out[f"dU_{i}"]
        dense = dense + multi_mode_product(C, mats)
    assert rel(PZ, dense) <= 1e-10
    # Orthogonal projection: Z − PZ is orthogonal to the tangent vector PZ.
    assert abs(np.vdot(Z - PZ, PZ)) <= 1e-12 * np.linalg.norm(Z) ** 2
    assert abs(np.linalg.norm(Z - PZ) - out["epsilon"]) <= 1e-12 * np.linalg.norm(Z)


@pytest.mark.parametrize("name", ["unfold_fold_3way", "unfold_fold_4way"])
def test_unfold_cases_follow_the_c_order_convention(name):
    inputs, out, _ = load_case(None, name)
    X = inputs["X"]
    for k in range(X.ndim):
        assert np.array_equal(out[f"unfold_{k}"], np.moveaxis(X, k, 0).reshape(X.shape[k], -1))
        assert np.array_equal(unfold(out[f"fold_{k}"], k), inputs[f"M_{k}"])
        assert np.array_equal(fold(out[f"unfold_{k}"], k, X.shape), X)


def test_write_refuses_cases_that_are_not_well_posed(tmp_path, monkeypatch):
    # With a core-conditioning bound no Gaussian core meets, every case with a core is refused.
    monkeypatch.setattr(wellposed, "MAX_CORE_CONDITION", 1.0)
    with pytest.raises(GoldenError, match="condition number"):
        write_golden(tmp_path / "a")
    out, err = io.StringIO(), io.StringIO()
    assert golden.run_command("write", tmp_path / "b", out=out, err=err) == 1
    assert "MAX_CORE_CONDITION" in err.getvalue() and out.getvalue() == ""  # errors go to stderr


def test_hosvd_decisions_use_the_thresholds_truncation_reports(monkeypatch):
    """The decision check takes each mode's bound from hosvd's report, not from a copy of the
    rule: a bound moved next to the dropped tails makes both HOSVD cases ill posed."""
    def moved_bounds(*args, **kwargs):
        T, rep = truncation.hosvd(*args, **kwargs)
        return T, dataclasses.replace(rep, mode_thresholds=tuple(1.1 * t for t in rep.tails))
    monkeypatch.setattr(cases, "hosvd", moved_bounds)
    bad = failed(check_golden())
    assert set(bad) == {"hosvd_tol_3way", "sthosvd_tol_4way"}
    assert all("not robust" in r.problems[0] for r in bad.values())


# ---------------------------------------------------------------------------------------
# faults: each case fails on its own, unreadable manifests, tolerances, missing cases
# ---------------------------------------------------------------------------------------
def truncate_npz_and_rerecord(directory, name):
    path = directory / f"{name}.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    update_sha(directory, name)


def set_output(case_index, output, key, value):
    return lambda m: m["cases"][case_index]["outputs"][output].__setitem__(key, value)


BAD_ENTRIES = {
    "truncated npz, sha256 re-recorded": (None, "cannot be read as an npz file"),
    "entry is a number": (lambda m: m["cases"].__setitem__(3, 42), "is a JSON int, not an object"),
    "entry is a string": (lambda m: m["cases"].__setitem__(3, "conv2d"), "is a JSON str, not an object"),
    "entry lacks its file": (lambda m: m["cases"][3].pop("file"), "field 'file' must be a string"),
    "file outside the set": (lambda m: m["cases"][3].__setitem__("file", "../x.npz"), "plain .npz file name"),
    "outputs not an object": (lambda m: m["cases"][3].__setitem__("outputs", []), "field 'outputs'"),
    "rtol Infinity": (set_output(3, "tails", "rtol", float("inf")), "rtol must be a finite number in [0, 1e-06]"),
    "rtol NaN": (set_output(3, "tails", "rtol", float("nan")), "rtol must be a finite number"),
    "rtol too large": (set_output(3, "tails", "rtol", 1e-3), "rtol must be a finite number in [0, 1e-06], got 0.001"),
    "atol negative": (set_output(3, "tails", "atol", -1.0), "atol must be a finite number in [0, 1e-06]"),
    "atol a string": (set_output(3, "tails", "atol", "1e-12"), "atol must be a finite number"),
    "unknown comparison": (set_output(3, "tails", "comparison", "loose"), "comparison 'loose' is not one of"),
    "exact with a tolerance": (set_output(3, "ranks", "rtol", 1e-12), "an exact comparison has rtol = atol = 0"),
    "duplicate name": (lambda m: m["cases"].__setitem__(4, dict(m["cases"][3])), "a second manifest entry named"),
}


@pytest.mark.parametrize("fault", list(BAD_ENTRIES))
def test_a_bad_case_fails_on_its_own(copy, fault):
    change, message = BAD_ENTRIES[fault]
    if change is None:
        truncate_npz_and_rerecord(copy, case_names()[3])
    else:
        edit_manifest(copy, change)
    results = check_golden(copy)
    bad = failed(results)
    names = list(case_names())
    expected_bad = {names[3] if fault != "entry is a number" and fault != "entry is a string" else "cases[3]"}
    if fault == "duplicate name":
        expected_bad = {names[3], names[4]}  # the second entry fails, and the case it replaced is missing
    elif fault.startswith("entry is"):
        expected_bad.add(names[3])  # reported missing from the manifest
    assert set(bad) == expected_bad, {k: v.problems for k, v in bad.items()}
    assert any(message in p for r in bad.values() for p in r.problems), {k: v.problems for k, v in bad.items()}
    assert all(r.ok for r in results if r.name not in expected_bad)
    out, err = io.StringIO(), io.StringIO()
    assert golden.run_command("check", copy, out=out, err=err) == 1
    assert message in err.getvalue()  # errors on stderr (the report on stdout says FAIL)
    assert out.getvalue().splitlines()[-1].startswith(f"{len(results)} cases, {len(expected_bad)} failed")


def test_garbage_cannot_pass_through_an_edited_tolerance(copy):
    """With rtol = Infinity any output would pass the comparison; the check refuses the tolerance."""
    rewrite_npz(copy / "conv2d_basic.npz", lambda a: a["output/y"].__setitem__(..., 1e6))
    update_sha(copy, "conv2d_basic")
    edit_manifest(copy, set_output(6, "y", "rtol", float("inf")))
    assert case_names()[6] == "conv2d_basic"
    assert list(failed(check_golden(copy))) == ["conv2d_basic"]
    with pytest.raises(GoldenError, match="rtol must be a finite number"):
        load_case(copy, "conv2d_basic")


def test_a_cut_manifest_reports_the_missing_cases(copy):
    edit_manifest(copy, lambda m: m.__setitem__("cases", m["cases"][:3]))
    results = check_golden(copy)
    assert [r.name for r in results] == list(case_names())
    bad = failed(results)
    assert list(bad) == list(case_names()[3:]) and all("missing from the manifest" in r.problems[0]
                                                        for r in bad.values())
    out = io.StringIO()
    assert golden.run_command("check", copy, out=out, err=io.StringIO()) == 1
    assert out.getvalue().splitlines()[-1].startswith(f"{len(case_names())} cases, {len(case_names()) - 3} failed")


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "is not UTF-8"),
    (b'{"schema": "tucker_ref.golden", "cases": [', "is not valid JSON"),
    (b"[1, 2]", "is not a tucker_ref golden manifest"),
    (b'{"schema": "tucker_ref.golden", "schema_version": 1, "cases": {}}', "has no list of cases"),
], ids=["not UTF-8", "truncated", "a list", "cases not a list"])
def test_an_unreadable_manifest_gives_one_clear_error(copy, content, message):
    (copy / golden.MANIFEST_NAME).write_bytes(content)
    with pytest.raises(GoldenError, match=message):
        check_golden(copy)
    out, err = io.StringIO(), io.StringIO()
    assert golden.run_command("check", copy, out=out, err=err) == 1
    assert out.getvalue() == "" and err.getvalue().count("\n") == 1 and message in err.getvalue()
    assert str(copy / golden.MANIFEST_NAME) in err.getvalue()
