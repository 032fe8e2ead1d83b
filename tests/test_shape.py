"""The code's shape (issue #13): no function in gpt1_hf/ or scripts/ longer than 100 lines, and no module importing
another module's private (underscored) names."""

import ast
from pathlib import Path

import pytest
from conftest import load_script

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


SCRIPTS = sorted(p.stem for p in ROOT.joinpath("scripts").glob("*.py"))


def test_every_script_answers_help(capsys):
    """``scripts/<name>.py --help`` prints its usage and exits 0 (in-process: the scripts' ``main(argv)``)."""
    for name in SCRIPTS:
        with pytest.raises(SystemExit) as stop:
            load_script(name).main(["--help"])
        assert stop.value.code in (0, None), name
        assert "usage" in capsys.readouterr().out.lower(), name
