"""The package's shape: no module imports one that imports it back, none is too long to read in
one sitting, no function is longer than a screenful or two, imports sit at the top of each module,
no module reaches for another's private names, the package's docstring names every module, and
none shadows a standard-library module. (ruff's C901 keeps every function's complexity at 15 or
less.)"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "resnet_course"
MAX_LINES = 600
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other package modules, at any depth (function-level ones count too)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                target = ".".join(base + [node.module]) if node.module else ".".join(base)
                if node.module is None:  # from . import x
                    found |= {f"{target}.{alias.name}" for alias in node.names}
                else:
                    found.add(target)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {t for t in found if t.startswith("resnet_course.") and t != name}
    return graph


def test_no_import_cycles():
    graph = _imports()

    def reaches(start: str, goal: str, seen: set) -> bool:
        for target in graph.get(start, ()):
            if target == goal or (target not in seen and reaches(target, goal, seen | {target})):
                return True
        return False

    cyclic = sorted(name for name in graph if reaches(name, name, {name}))
    assert not cyclic, f"modules on an import cycle: {cyclic}"


def test_the_standin_only_draws_and_evaluation_does_not_reach_into_training():
    graph = _imports()
    assert graph["resnet_course.standin"] <= {
        "resnet_course.birds",
        "resnet_course.drawing",
        "resnet_course.config",
        "resnet_course.runfolder",
    }
    assert "resnet_course.training" not in graph["resnet_course.evaluation"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short_enough_to_hold_in_your_head(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_module_shadows_the_standard_library():
    if not hasattr(sys, "stdlib_module_names"):  # Python 3.10 and later list them
        pytest.skip("this Python does not list its standard-library modules")
    names = {path.stem for path in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert not names & set(sys.stdlib_module_names) - {"__init__", "__main__"}


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_function_is_short_and_imports_at_the_top_of_its_module(path):
    tree = ast.parse(path.read_text())
    for function in _functions(tree):
        length = function.end_lineno - function.lineno + 1
        assert length <= MAX_FUNCTION_LINES, f"{function.name} is {length} lines long"
        inner = [node for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not inner, f"{function.name} imports inside the function (line {inner[0].lineno if inner else 0})"


def test_no_module_imports_another_modules_private_names():
    """A name starting with an underscore is its module's own; the checkers' private core is the
    one exception, shared inside the checkers package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and not (node.level and path.parent.name == "checkers" and node.module == "core")
            ):
                found += [
                    f"{path.name}: {alias.name} from {node.module}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert not found


def test_the_package_docstring_names_every_module():
    import resnet_course

    modules = {path.stem for path in PACKAGE.glob("*.py") if not path.stem.startswith("_")} | {"checkers"}
    missing = [name for name in sorted(modules) if f"``{name}``" not in resnet_course.__doc__]
    assert not missing, f"resnet_course/__init__.py does not describe {missing}"
