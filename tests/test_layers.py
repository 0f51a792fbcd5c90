"""The package's structure, checked: layers import only downward, heavy dependencies stay in their layer,
no module grows past 700 lines, every third-party import is declared, and a plain fit stays light."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bayesmix"
# import name -> distribution name, where they differ
DISTRIBUTION = {"arviz_stats": "arviz-stats", "sklearn": "scikit-learn"}
OPTIONAL = {"matplotlib", "numpyro", "jax", "blackjax", "dask", "distributed"}  # extras, imported lazily


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_contracts_hold():
    """import-linter's contracts in pyproject.toml: layers, forbidden heavy imports, no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_700_lines(path):
    assert len(path.read_text().splitlines()) <= 700


def test_every_third_party_import_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in config["project"]["dependencies"]}
    for extra in config["project"].get("optional-dependencies", {}).values():
        declared |= {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in extra}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "bayesmix" or top in OPTIONAL:
                    continue
                if DISTRIBUTION.get(top, top).lower() not in declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_import_and_fit_load_no_heavy_dependency():
    code = (
        "import sys, bayesmix as bm\n"
        "m = bm.lmer('Reaction ~ Days + (Days | Subject)', bm.load_dataset('sleepstudy'))\n"
        "heavy = {'pymc', 'pytensor', 'nutpie', 'numba', 'arviz', 'arviz_stats', 'xarray', 'matplotlib', 'dask', 'distributed'}\n"
        "print(sorted(heavy & {k.split('.')[0] for k in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_subpackage_says_what_it_owns():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(ROOT)} has no docstring"
