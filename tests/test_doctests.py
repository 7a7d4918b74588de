"""The examples in the docstrings run as printed, and the main public names keep theirs.

Every module of ``tucker_ref`` is one case: its numpydoc ``Examples`` sections (``>>>``
lines) run under doctest with ``ELLIPSIS | NORMALIZE_WHITESPACE``, in the module's namespace.
The modules are found by walking the package; a module that fails to import fails the walk
rather than dropping out of it. ``REQUIRED`` lists the functions, classes and methods that
must show at least one example, so deleting an Examples section fails here too.
"""

import ast
import doctest
import importlib
import importlib.util
import inspect
import pkgutil

import pytest

import tucker_ref

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: Importing it runs the command line (``raise SystemExit(main())``): its docstring is read from source.
NOT_IMPORTABLE = ("tucker_ref.__main__",)

REQUIRED = [
    # algebra
    "tucker_ref.tucker.TuckerTensor",
    "tucker_ref.tucker.TuckerTensor.norm",
    "tucker_ref.tucker.TuckerTensor.inner",
    "tucker_ref.tucker.unfold",
    "tucker_ref.tucker.fold",
    "tucker_ref.tucker.mode_product",
    "tucker_ref.tucker.multi_mode_product",
    "tucker_ref.tucker.random_orthonormal",
    "tucker_ref.tucker.random_tucker",
    # truncation (ST-HOSVD is hosvd(sequential=True), see REQUIRED_CALLS)
    "tucker_ref.truncation.hosvd",
    "tucker_ref.truncation.truncate",
    "tucker_ref.truncation.rank_for_tolerance",
    # manifold
    "tucker_ref.manifold.tangent_projection",
    # integrators
    "tucker_ref.integrators.steps.tdlrt_step",
    "tucker_ref.integrators.steps.augment",
    "tucker_ref.integrators.steps.s_step",
    "tucker_ref.integrators.steps.truncate_cycle",
    "tucker_ref.integrators.steps.tdlrt_cycle",
    "tucker_ref.integrators.steps.fixed_rank_bug_step",
    # gradient oracles
    "tucker_ref.gradient_oracle.DenseGradient",
    "tucker_ref.nn.tucker_functional.TuckerConvGradient",
    "tucker_ref.nn.tucker_functional.LowRankLinearGradient",
    # nn kernels
    "tucker_ref.nn.tucker_functional.tucker_conv2d",
    "tucker_ref.nn.tucker_functional.tucker_conv2d_backward",
    "tucker_ref.nn.functional.conv2d",
]
#: What some required examples must show: ST-HOSVD, and the cycle's pieces composing to the step.
REQUIRED_CALLS = {
    "tucker_ref.truncation.hosvd": "sequential=True",
    "tucker_ref.integrators.steps.truncate_cycle": "tdlrt_step(",
}


def _import_error(name):
    raise ImportError(f"{name} failed to import while walking tucker_ref")


def modules() -> list[str]:
    walked = pkgutil.walk_packages(tucker_ref.__path__, "tucker_ref.", onerror=_import_error)
    return ["tucker_ref"] + [info.name for info in walked if info.name not in NOT_IMPORTABLE]


def resolve(qualname: str):
    """The object named ``package.module.Class.method``: the longest importable module prefix, then attributes."""
    parts = qualname.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(qualname)


def examples(obj) -> list[doctest.Example]:
    """The ``>>>`` examples of the object's own docstring (not one inherited from a base class)."""
    return doctest.DocTestParser().get_examples(obj.__doc__ or "")


@pytest.mark.parametrize("name", modules())
def test_docstring_examples_run_as_printed(run_doctests, name):
    module = importlib.import_module(name)
    run_doctests(doctest.DocTestFinder().find(module), OPTIONFLAGS)


@pytest.mark.parametrize("name", NOT_IMPORTABLE)
def test_unimportable_module_has_no_examples(name):
    """A module this file cannot import must not hold examples that would silently never run."""
    spec = importlib.util.find_spec(name)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    docstrings = [ast.get_docstring(node) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not any(doctest.DocTestParser().get_examples(d or "") for d in docstrings)


@pytest.mark.parametrize("qualname", REQUIRED)
def test_main_public_names_have_examples(qualname):
    obj = resolve(qualname)
    assert inspect.isclass(obj) or inspect.isroutine(obj), f"{qualname} is not a function or class"
    found = examples(obj)
    assert found, f"{qualname} has no Examples section with >>> lines"
    if qualname in REQUIRED_CALLS:
        sources = "".join(e.source for e in found)
        assert REQUIRED_CALLS[qualname] in sources, f"the examples of {qualname} must call {REQUIRED_CALLS[qualname]}"


def test_the_doctest_check_can_fail(run_doctests):
    """A wrong expected output fails with doctest's report; a docstring without ``>>>`` has no examples."""
    wrong = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
    with pytest.raises(AssertionError, match=r"Expected:\s+3\s+Got:\s+2"):
        run_doctests([wrong], OPTIONFLAGS)

    def undocumented():
        """No examples here."""

    assert examples(undocumented) == []
