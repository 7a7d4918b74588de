"""docs/api.md documents every public name, and documents nothing that does not exist.

Public names of a module: ``__all__`` if the module defines it, else the names not starting
with ``_`` that the module defines at top level. Regenerate the page with
``python docs/gen_api.py`` after adding or renaming a public name.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import tucker_ref

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
# The modules the API page must cover at least; new modules are found by walking the package.
REQUIRED = {
    "tucker_ref", "tucker_ref.tucker", "tucker_ref.truncation", "tucker_ref.manifold", "tucker_ref.nn",
    "tucker_ref.nn.functional", "tucker_ref.nn.layers", "tucker_ref.nn.models", "tucker_ref.nn.tucker_functional",
    "tucker_ref.integrators", "tucker_ref.integrators.substeps", "tucker_ref.integrators.steps",
    "tucker_ref.integrators.oracle", "tucker_ref.integrators.optim", "tucker_ref.integrators.baselines",
    "tucker_ref.data", "tucker_ref.training", "tucker_ref.golden", "tucker_ref.testing",
    "tucker_ref.testing.strategies", "tucker_ref.testing.oracles", "tucker_ref.testing.problems",
}


def modules() -> list[str]:
    found = ["tucker_ref"]
    for info in pkgutil.walk_packages(tucker_ref.__path__, "tucker_ref."):
        if not any(part.startswith("_") for part in info.name.split(".")) and info.name != "tucker_ref.cli":
            found.append(info.name)
    return found


def public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def entry_pattern(module: str, name: str) -> str:
    """A list entry of docs/api.md that starts with the qualified name (a mention elsewhere does not count)."""
    return rf"^- `{re.escape(module)}\.{re.escape(name)}[(`:= ]"


@pytest.fixture(scope="module")
def api_text():
    return API_MD.read_text(encoding="utf-8")


def test_every_required_module_is_discovered():
    assert REQUIRED <= set(modules())


@pytest.mark.parametrize("name", modules())
def test_every_public_name_is_documented(api_text, name):
    module = importlib.import_module(name)
    assert f"## {name}\n" in api_text, f"module {name} has no section in docs/api.md"
    missing = []
    for public in public_names(module):
        assert hasattr(module, public), f"{name}.__all__ lists {public!r}, which the module does not define"
        if not re.search(entry_pattern(name, public), api_text, flags=re.M):
            missing.append(public)
    assert not missing, f"undocumented public names of {name}: {missing} (run python docs/gen_api.py)"


def test_every_documented_name_exists(api_text):
    stale = []
    for qual in re.findall(r"^- `(tucker_ref(?:\.\w+)+)", api_text, flags=re.M):
        module_name, _, attr = qual.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            stale.append(qual)
            continue
        if not hasattr(module, attr):
            stale.append(qual)
    assert not stale, f"docs/api.md documents names that do not exist: {stale}"


def test_the_check_can_fail():
    """A page without one public name is caught by the same pattern the test uses."""
    text = API_MD.read_text(encoding="utf-8")
    pattern = entry_pattern("tucker_ref.tucker", "unfold")
    assert re.search(pattern, text, flags=re.M)
    without = re.sub(r"^- `tucker_ref\.tucker\.unfold\(.*$", "", text, flags=re.M)
    assert "`tucker_ref.tucker.unfold`" in without  # still mentioned by the re-export line ...
    assert not re.search(pattern, without, flags=re.M)  # ... which is not an entry of its own
