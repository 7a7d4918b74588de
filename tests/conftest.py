"""Hypothesis profiles, and the doctest runner shared by the tests of printed examples.

``ci`` (the default): no deadline, a fixed example budget, derandomized so a CI run is
reproducible. ``dev``: a larger budget for local searching
(``HYPOTHESIS_PROFILE=dev pytest``).
"""

import doctest
import io
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=500,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def run_doctests():
    """``run(tests, optionflags) -> int``: run ``doctest.DocTest`` objects, return how many examples ran.

    Fails the calling test with doctest's report (expected and actual output of every failing
    example) instead of printing it to a captured stdout.
    """
    def run(tests, optionflags):
        report = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=optionflags)
        for test in tests:
            runner.run(test, out=report.write)
        assert runner.failures == 0, report.getvalue()
        return runner.tries

    return run
