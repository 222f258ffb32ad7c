"""What the package imports is what it declares: a clean `pip install dnntune` can import every module."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dnntune"

# import name → distribution, when the environment cannot tell (not installed) or tells the wrong one
IMPORT_TO_DIST = {
    "yaml": "PyYAML",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "psycopg2": "psycopg2-binary",
    # pydantic pins the exact pydantic-core it is built on; `pydantic_core.PydanticCustomError` is
    # pydantic's documented way to raise custom errors, so pydantic is the declaration that counts
    "pydantic_core": "pydantic",
}


def norm(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    return norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared() -> dict[str, str]:
    """Normalized distribution name → where it is declared (dependencies or an extra)."""
    project = pyproject()["project"]
    out = {req_name(r): "dependencies" for r in project["dependencies"]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for r in reqs:
            out.setdefault(req_name(r), f"optional-dependencies.{extra}")
    return out


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module → the source files importing it (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "dnntune" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def distributions(module: str) -> set[str]:
    if module in IMPORT_TO_DIST:
        return {norm(IMPORT_TO_DIST[module])}
    return {norm(d) for d in metadata.packages_distributions().get(module, [module])}


def test_every_third_party_import_is_a_declared_dependency():
    imports = third_party_imports()
    assert {"torch", "optuna", "yaml", "sklearn"} <= set(imports)  # the scan sees the package's imports
    deps = declared()
    missing = [f"{m} (imported in {', '.join(sorted(files))}; distribution {' or '.join(sorted(distributions(m)))})"
               for m, files in sorted(imports.items()) if not distributions(m) & set(deps)]
    assert not missing, "not declared in pyproject.toml dependencies: " + "; ".join(missing)


def test_every_declared_dependency_is_pinned_in_constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a name==version pin"
            pins[norm(name)] = version
    unpinned = [f"{name} ({where})" for name, where in sorted(declared().items()) if name not in pins]
    assert not unpinned, "pyproject.toml dependencies without a pin in constraints.txt: " + ", ".join(unpinned)
