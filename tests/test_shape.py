"""The code's shape (issue #13): no function in gpt1_hf/ or scripts/ longer than 100 lines, and no module importing
another module's private (underscored) names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.joinpath("gpt1_hf").rglob("*.py"), *ROOT.joinpath("scripts").glob("*.py")])


def _trees():
    for path in SOURCES:
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_no_function_longer_than_100_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100]
    assert not long, "functions over 100 lines: " + "; ".join(long)


def test_no_private_imports_across_modules():
    private = [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name} from {node.module}"
               for path, tree in _trees() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gpt1_hf"))
               for alias in node.names if alias.name.startswith("_")]
    assert not private, "private names imported across modules: " + "; ".join(private)
