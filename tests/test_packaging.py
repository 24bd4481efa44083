"""The wheel ships every package folder, and the top-level conformance/ and fixtures/ inside the package."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_list_names_every_package_folder() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "unlearn_audit").rglob("__init__.py")}
    mapped = {name for name in setuptools["package-dir"]}
    recipe_folders = {
        f"unlearn_audit.fixtures.{p.name}"
        for p in (ROOT / "fixtures").iterdir()
        if p.is_dir() and p.name.isidentifier()
    }
    assert set(setuptools["packages"]) == folders | mapped | recipe_folders
    assert setuptools["package-dir"] == {
        "unlearn_audit.conformance": "conformance",
        "unlearn_audit.fixtures": "fixtures",
    }


def test_plugin_module_imports_without_torch() -> None:
    import subprocess

    code = "import sys, unlearn_audit.plugin; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
