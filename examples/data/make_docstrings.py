"""Build a text-classification corpus offline: which library does a docstring come from?

Every document is the first paragraph of a function's or class's docstring in the source of an installed
library (numpy, scipy, scikit-learn, torch, sympy, networkx, matplotlib), read with ``ast`` (nothing is
imported or executed). The library's own names and aliases (``numpy``, ``np``, ``torch``, ``plt``, ...) are
removed from the text, so the classes are told apart by the language of each field (arrays and dtypes, sparse
solvers, estimators, tensors and modules, symbolic algebra, graphs, plotting), not by a name. Texts that occur
in more than one library are dropped, and each class is sampled to the same size with a fixed seed, so the
corpus is the same on every run with the same library versions (they are printed).

Usage::

    python examples/data/make_docstrings.py OUT.csv [--per-class 600] [--seed 0]

``examples/data/docstrings.csv`` (60 per class) was written by this script.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib.metadata
import importlib.util
import random
import re
from pathlib import Path

PACKAGES = {"numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn", "torch": "torch", "sympy": "sympy",
            "networkx": "networkx", "matplotlib": "matplotlib"}
NAMES = re.compile(r"\b(numpy|np|scipy|sp|sklearn|scikit-learn|scikit|torch|pytorch|sympy|networkx|nx|matplotlib|"
                   r"mpl|plt|pyplot)\b", re.IGNORECASE)
SKIP_PARTS = {"tests", "test", "testing", "_vendor", "externals", "_vendored", "benchmarks"}
MIN_WORDS, MAX_CHARS = 6, 600


def _source_root(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package}: not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _clean(doc: str) -> str | None:
    """The first paragraph of a docstring, without library names, on one line; None if too short."""
    first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(NAMES.sub(" ", first).split())
    text = re.sub(r"\s+([.,:;)])", r"\1", text).replace("( ", "(").strip(" .")
    if len(text.split()) < MIN_WORDS:
        return None
    return text[:MAX_CHARS]


def docstrings(package: str) -> list[str]:
    """The cleaned docstrings of one package's functions and classes, in file and source order."""
    root = _source_root(package)
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(p in SKIP_PARTS or p.startswith("test_") for p in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                text = _clean(doc) if doc else None
                if text:
                    out.append(text)
    return out


def build(per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows: ``per_class`` unique docstrings per package, sampled with ``seed``, shuffled."""
    found = {label: docstrings(pkg) for pkg, label in PACKAGES.items()}
    owners: dict[str, set[str]] = {}
    for label, texts in found.items():
        for t in texts:
            owners.setdefault(t, set()).add(label)
    rng = random.Random(seed)
    rows = []
    for label, texts in found.items():
        unique = sorted({t for t in texts if len(owners[t]) == 1})
        if len(unique) < per_class:
            raise SystemExit(f"{label}: only {len(unique)} unique docstrings, fewer than {per_class}")
        rows += [(t, label) for t in rng.sample(unique, per_class)]
    rng.shuffle(rows)
    return rows


def versions() -> dict[str, str]:
    return {dist: importlib.metadata.version(dist) for dist in PACKAGES.values()}


def write(path: str | Path, per_class: int, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(build(per_class, seed))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    path = write(a.out, a.per_class, a.seed)
    print(f"{path}: {a.per_class} docstrings per class from {', '.join(f'{k} {v}' for k, v in versions().items())}")


if __name__ == "__main__":
    main()
