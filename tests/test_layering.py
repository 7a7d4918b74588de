"""The package's layering (docs/conventions.md §9), checked on the import statements.

Each module may import only from the floors below it, and no module imports another module's
private names. Read from the source with ``ast``, so a function-local import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tucker_ref

PACKAGE_DIR = Path(tucker_ref.__file__).parent

#: Module (or subpackage) prefix -> the prefixes it may import from, besides itself.
#: Read top-down this is the picture in docs/conventions.md §9.
ALLOWED = {
    "checks": (),
    "linalg": (),
    "tucker": ("checks", "linalg"),
    "truncation": ("checks", "linalg", "tucker"),
    "manifold": ("checks", "linalg", "tucker", "truncation"),
    "gradient_oracle": ("checks", "tucker"),
    "integrators": ("checks", "linalg", "tucker", "truncation", "manifold", "gradient_oracle"),
    "nn": ("checks", "linalg", "tucker", "truncation", "gradient_oracle"),
    "data": ("checks",),
    "golden": ("checks", "linalg", "tucker", "truncation", "manifold", "gradient_oracle", "integrators", "nn", "__init__"),
    "testing": ("checks", "linalg", "tucker", "truncation", "manifold", "gradient_oracle", "integrators", "nn"),
    "training": ("checks", "linalg", "tucker", "truncation", "manifold", "gradient_oracle", "integrators", "nn", "data"),
    "cli": ("training", "golden", "integrators", "data", "checks"),
    "__main__": ("cli",),
    "__init__": ("checks", "linalg", "tucker", "truncation", "manifold", "gradient_oracle", "integrators", "nn"),
}


def _modules():
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        yield path, parts


def _imports(path: Path, parts: tuple):
    """``(target, names, line)`` for every import of a ``tucker_ref`` module in ``path``;
    ``target`` is the dotted path inside the package (``""`` for the package itself)."""
    package = parts[:-1]  # a module's package; for an __init__ the package it initializes
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "tucker_ref" or node.module.startswith("tucker_ref.")):
                target = node.module[len("tucker_ref"):].lstrip(".")
            else:
                continue
            yield target, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tucker_ref" or alias.name.startswith("tucker_ref."):
                    yield alias.name[len("tucker_ref"):].lstrip("."), [], node.lineno


def _floor(parts: tuple) -> str:
    return "__init__" if parts == ("__init__",) else parts[0]


def _floor_of_target(target: str, names: list) -> list[str]:
    """The floors an import reaches: ``from . import x`` at the top reaches ``x``."""
    if target:
        return [target.split(".")[0]]
    return list(names) or ["__init__"]


MODULES = list(_modules())


def test_every_module_has_a_floor():
    floors = {_floor(parts) for _, parts in MODULES}
    assert floors <= set(ALLOWED), f"modules without a floor in ALLOWED: {sorted(floors - set(ALLOWED))}"


@pytest.mark.parametrize("path, parts", MODULES, ids=[".".join(p) for _, p in MODULES])
def test_imports_go_down_the_floors(path, parts):
    own = _floor(parts)
    wrong = []
    for target, names, line in _imports(path, parts):
        for floor in _floor_of_target(target, names):
            if floor == "__version__":
                floor = "__init__"
            if floor != own and floor not in ALLOWED[own]:
                wrong.append(f"line {line}: imports {floor!r} ({target or 'tucker_ref'})")
    assert not wrong, f"{'.'.join(parts)} ({own}) reaches above its floor: {wrong}"


@pytest.mark.parametrize("path, parts", MODULES, ids=[".".join(p) for _, p in MODULES])
def test_no_private_name_crosses_a_module(path, parts):
    """``from x import _name`` is refused, and so is ``module._name`` on an imported module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_aliases = set()
    wrong = []
    for target, names, line in _imports(path, parts):
        wrong += [f"line {line}: {name} from {target or 'tucker_ref'}" for name in names
                  if name.startswith("_") and name != "__version__"]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tucker_ref")):
            module_aliases.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            module_aliases.update((a.asname or a.name).split(".")[0] for a in node.names
                                  if a.name.startswith("tucker_ref"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in module_aliases):
            wrong.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, f"{'.'.join(parts)} uses another module's private names: {wrong}"


def test_the_check_sees_a_planted_violation(tmp_path):
    """The two checks fail on a module that reaches up a floor and uses a private name."""
    planted = tmp_path / "planted.py"
    planted.write_text("from ..training import trainer\nfrom ..truncation import _secret\ntrainer._Run\n")
    found = list(_imports(planted, ("nn", "planted")))
    assert ("training", ["trainer"], 1) in found and ("truncation", ["_secret"], 2) in found
    with pytest.raises(AssertionError, match="above its floor"):
        test_imports_go_down_the_floors(planted, ("nn", "planted"))
    with pytest.raises(AssertionError, match="_secret.*trainer._Run"):
        test_no_private_name_crosses_a_module(planted, ("nn", "planted"))
