"""Training of LeNet5 on MNIST with TDLRT and the baselines: the loop, update rules, logs,
checkpoints, metrics and plots.

``training`` wires the layers (:mod:`tucker_ref.nn`), the integrators
(:mod:`tucker_ref.integrators`) and the data (:mod:`tucker_ref.data`); :mod:`tucker_ref.cli`
only parses arguments and calls :func:`train`.

Modules: :mod:`.config` (settings and defaults), :mod:`.methods` (one update rule per
method), :mod:`.trainer` (data, model and the loop), :mod:`.runstate` (the state of a run
and its checkpoint), :mod:`.records` (the logs and the summary of a run), :mod:`.checkpoint`,
:mod:`.metrics` (parameter counts, compression, spectra), :mod:`.rundir` (one run per
directory, nothing of the user's replaced), :mod:`.runfiles` (JSON / JSON lines, atomic
writes), :mod:`.runtime` (glibc malloc thresholds of the process), :mod:`.progress`,
:mod:`.plots`.
"""

from .config import METHODS, TrainConfig
from .trainer import TrainingDiverged, build_model, evaluate, format_summary, initial_ranks, load_data, train

__all__ = [
    "METHODS",
    "TrainConfig",
    "TrainingDiverged",
    "build_model",
    "evaluate",
    "format_summary",
    "initial_ranks",
    "load_data",
    "train",
]
