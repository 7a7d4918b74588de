"""Test support for ``tucker_ref`` and for code built on it (needs the ``test`` extra).

* :mod:`tucker_ref.testing.strategies` — hypothesis strategies that draw a *seed* and a
  *spectrum* and build arrays with ``np.random.default_rng(seed)``, so that the
  conditioning a property needs is controlled (never ``hnp.arrays`` with a default fill).
* :mod:`tucker_ref.testing.oracles` — small numerical oracles: a normwise relative error,
  central-difference and Taylor-slope derivative checks, a dot-product (adjoint) check.

The package code never imports this subpackage; tests and validation scripts do. The
submodules are not imported here, so ``oracles`` works without hypothesis installed::

    from tucker_ref.testing import oracles, strategies
"""
