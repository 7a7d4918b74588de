"""Golden files: a versioned set of reference cases to check other implementations against.

A golden set is a directory with one ``.npz`` file per case and a JSON manifest
(:data:`MANIFEST_NAME`, fields in :data:`MANIFEST_FIELDS`, documented in ``docs/crosscheck.md``).
Each npz holds the case's input arrays under ``input/<name>`` and the outputs tucker_ref
computed from them under ``output/<name>``; non-array settings (stride, learning rate, ``tau``)
are the case's ``params`` in the manifest. The canonical set ships in
``tucker_ref/golden_data`` (:func:`default_golden_dir`)::

    tucker-ref golden write DIR     # write the set (float64, small sizes, seeded)
    tucker-ref golden check [DIR]   # recompute every case, compare; exit 1 on any failure

Checking another implementation: ``inputs, expected, tolerances = load_case(DIR, name)``, run
your code on ``inputs``, then ``compare_case(yours, expected, tolerances)`` (see
``docs/crosscheck.md`` for a worked PyTorch example).

One module per concern, every public name re-exported here:

* :mod:`.files` — manifest schema, reading and validating a set, npz and JSON I/O;
* :mod:`.compare` — tolerances and the comparison of one case;
* :mod:`.wellposed` — the well-posedness checks every computed case passes;
* :mod:`.cases` — the case kinds, their seeded inputs and the canonical set;
* :mod:`.command` — writing and checking a whole set, ``tucker-ref golden``.
"""

from .cases import case_names
from .command import check_golden, run_command, write_golden
from .compare import COMPARISONS, MAX_ATOL, MAX_RTOL, RTOL_ALGEBRA, RTOL_SPECTRAL, CaseResult, Tolerance, compare_case
from .files import (MANIFEST_FIELDS, MANIFEST_NAME, SCHEMA, SCHEMA_VERSION, GoldenError, default_golden_dir, load_case,
                    load_manifest)
from .wellposed import DECISION_MARGIN, MAX_CORE_CONDITION, MIN_RELATIVE_GAP

__all__ = [
    "COMPARISONS",
    "DECISION_MARGIN",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "MAX_ATOL",
    "MAX_CORE_CONDITION",
    "MAX_RTOL",
    "MIN_RELATIVE_GAP",
    "RTOL_ALGEBRA",
    "RTOL_SPECTRAL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "CaseResult",
    "GoldenError",
    "Tolerance",
    "case_names",
    "check_golden",
    "compare_case",
    "default_golden_dir",
    "load_case",
    "load_manifest",
    "run_command",
    "write_golden",
]
