"""Imported first by the MNIST validation scripts: one BLAS thread per process unless set.

``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` default to 1; they only
take effect if set before NumPy is first imported, which is why this is a module of its own
and the scripts import it before anything else. On the shared 2-core machine one thread per
process was 5-20× faster than two (BLAS threads spin when the cores are busy), and a fixed
thread count keeps float32 trajectories reproducible (they differ between 1 and 2 threads).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
