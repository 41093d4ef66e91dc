"""The layout checks itself: the import contracts in pyproject.toml hold (lint-imports:
no circles, commands on top, the cost model apart from the exporter), every module of
tinycvae has a layer, and no function in src/ is longer than a screen."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_FUNCTION_LINES = 60


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [lint, "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout


def test_every_module_of_tinycvae_has_a_layer():
    """A new module or package must be placed in the layers, or imports could run any way."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    placed = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    package = SRC / "tinycvae"
    found = {
        f"tinycvae.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))
    }
    assert found - placed == set(), "modules without a layer in pyproject.toml"
    assert placed - found == set(), "layers name modules that do not exist"


def test_no_function_in_src_is_longer_than_60_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_entry_script_computes_the_checkout_by_hand():
    """The checkout's folders come from tinycvae.repo, in one place."""
    hits = [
        str(p.relative_to(ROOT))
        for p in (SRC / "tinycvae").rglob("*.py")
        if "parents[" in p.read_text() and p.name != "repo.py"
    ]
    assert hits == []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
