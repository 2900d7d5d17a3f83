"""The import rules of docs/architecture.md, enforced: every import in tfconv/ (module level, inside
functions, and `importlib.import_module` with a constant name) goes down the layers of the table between
its markers, never sideways or up, never to a library the importing package's row forbids; a computed
module name is refused; every package has a row.  The checker itself is tested on modules written here
that break each rule, so this test can fail."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"


def read_rules(text: str) -> Dict[str, Tuple[int, Set[str]]]:
    """package -> (layer, forbidden libraries) from the table between the markers."""
    block = text.split("<!-- import rules: begin -->")[1].split("<!-- import rules: end -->")[0]
    rules = {}
    for line in block.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|([^|]*)\|", line)
        if m:
            rules[m.group(2)] = (int(m.group(1)), {x.strip() for x in m.group(3).split(",") if x.strip()})
    return rules


def package_of(module: str) -> str:
    """tfconv.analyses.stats -> tfconv.analyses; tfconv.runner -> tfconv.runner; tfconv -> tfconv."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def imports_of(source: str, module: str, is_package: bool, packages=()) -> Tuple[List[Tuple[str, int]], List[int]]:
    """(every imported module name with its line, lines of import_module calls with a computed name);
    `from tfconv import analyses` names the package `tfconv.analyses` when it is one of `packages`."""
    out, dynamic = [], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((target, node.lineno))
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names if f"{target}.{a.name}" in packages]
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    out.append((node.args[0].value, node.lineno))
                else:
                    dynamic.append(node.lineno)
    return out, dynamic


def violations(module: str, source: str, is_package: bool, rules) -> List[str]:
    """Every broken rule of one module (empty when it keeps them all)."""
    own = package_of(module)
    if own not in rules:
        return [f"{module}: package {own} has no row in docs/architecture.md's import rules"]
    layer, forbidden = rules[own]
    bad = []
    imported, dynamic = imports_of(source, module, is_package, set(rules))
    for line in dynamic:
        bad.append(f"{module}:{line}: import_module with a computed name (write the module's name)")
    for target, line in imported:
        if target.split(".")[0] == "tfconv":
            other = package_of(target)
            if other == own or other not in rules:
                if other not in rules:
                    bad.append(f"{module}:{line}: imports {target}, whose package has no row")
                continue
            if rules[other][0] >= layer:
                bad.append(f"{module}:{line}: imports {target} (layer {rules[other][0]}) from layer {layer}")
        elif any(target == f or target.startswith(f + ".") for f in forbidden):
            bad.append(f"{module}:{line}: imports {target}, which {own} must not")
    return bad


def tree_violations(root: Path, rules) -> List[str]:
    bad = []
    for path in sorted((root / "tfconv").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        is_package = rel[-1] == "__init__"
        module = ".".join(rel[:-1] if is_package else rel)
        bad += violations(module, path.read_text(), is_package, rules)
    return bad


RULES = read_rules(DOC.read_text())


def test_the_table_covers_every_package():
    packages = {package_of(".".join(p.relative_to(ROOT).with_suffix("").parts[:-1] if p.name == "__init__.py"
                                    else p.relative_to(ROOT).with_suffix("").parts))
                for p in (ROOT / "tfconv").rglob("*.py")}
    assert packages == set(RULES), f"packages without a row: {packages - set(RULES)}; rows of nothing: {set(RULES) - packages}"


def test_every_import_of_tfconv_keeps_the_rules():
    bad = tree_violations(ROOT, RULES)
    assert not bad, "imports across a forbidden line:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, source, is_package, expected", [
    ("tfconv.core.model", "from ..config import load_config\n", False, "imports tfconv.config (layer 3) from layer 1"),
    ("tfconv.core.model", "def f():\n    from tfconv.pipeline import steps\n", False, "imports tfconv.pipeline"),
    ("tfconv.analyses.stats", "from ..cluster import ray_grid\n", False, "(layer 4) from layer 4"),
    ("tfconv.registry", "import importlib\nimportlib.import_module('tfconv.analyses.scaling')\n", False,
     "imports tfconv.analyses.scaling (layer 4) from layer 1"),
    ("tfconv.registry", "import importlib\nfor m in M:\n    importlib.import_module(m)\n", False, "computed name"),
    ("tfconv.core.ntk", "import ray\n", False, "imports ray, which tfconv.core must not"),
    ("tfconv.analyses.draw", "import matplotlib.pyplot as plt\n", False, "matplotlib.pyplot, which tfconv.analyses"),
    ("tfconv.store", "from . import layout\nimport torch\n", True, "imports torch, which tfconv.store must not"),
    ("tfconv.newpkg.x", "import numpy\n", False, "has no row"),
    ("tfconv.store.runs", "from tfconv import analyses\n", False, "imports tfconv.analyses (layer 4) from layer 2"),
])
def test_the_checker_refuses_each_kind_of_forbidden_import(module, source, is_package, expected):
    bad = violations(module, source, is_package, RULES)
    assert any(expected in b for b in bad), bad


@pytest.mark.parametrize("module, source, is_package", [
    ("tfconv.pipeline.steps", "from ..analyses import get_analysis\nfrom ..store import Results\nimport pandas\n", False),
    ("tfconv.analyses.draw", "import matplotlib\nfrom . import stats\nfrom ..figures.canvas import Canvas\n", False),
    ("tfconv.cli", "from . import __version__\nfrom .pipeline import steps\n", False),
])
def test_the_checker_accepts_imports_down_the_layers(module, source, is_package):
    assert violations(module, source, is_package, RULES) == []
