"""A third party adds an attack and a profile from its own package: `examples/blended_backdoor`.

The example is made visible as an installed distribution (its source folder on the path plus a
dist-info with its entry points, exactly what `pip install` would register), offline, in a fresh
interpreter, and audited through the plugin like any built-in profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "blended_backdoor"


def _entry_points_txt() -> str:
    """The entry points of the example's pyproject.toml, in the dist-info format pip writes."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    sections = []
    for group, eps in project["entry-points"].items():
        sections.append(f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()))
    return "\n".join(sections)


@pytest.fixture
def installed_example(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    info = site / "blended_backdoor-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: blended-backdoor\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(_entry_points_txt())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["UNLEARN_AUDIT_CACHE"] = str(tmp_path / "cache")
    return env


def test_registered_attack_and_profile_are_found(installed_example: dict[str, str]) -> None:
    code = (
        "from unlearn_audit.attacks.registry import attack_kinds, get_attack\n"
        "from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names\n"
        "assert 'tiny-blended' in profile_names(), profile_names()\n"
        "assert 'blended_backdoor' in attack_kinds()\n"
        "r = load_profile_recipes('tiny-blended')['blended']\n"
        "a = get_attack(r.attack['kind'])\n"
        "assert a.targeted_reference == 'retrain' and set(r.checks) <= set(a.checks)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=installed_example, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.slow
def test_audit_on_the_plugged_in_profile(installed_example: dict[str, str], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--audit-profile",
        "tiny-blended",
        "--unlearner",
        "unlearn_audit.methods:NoOp",
        "--unlearner",
        "unlearn_audit.methods:Retrain",
        "--audit-report",
        str(report),
    ]
    out = subprocess.run(cmd, env=installed_example, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # NoOp fails
    results = json.loads(report.read_text())["results"]
    by = {(r["unlearner"].rpartition(":")[2], r["check"]): r for r in results}
    validation = by[("NoOp", "targeted_removed")]["details"]
    assert validation["original_attack_success"] > 0.9  # the plugged-in attack works on the poisoned model
    for check in ("targeted_removed", "relearning_resistant", "not_mode_connected"):
        assert by[("NoOp", check)]["outcome"] == "failed", check
        assert by[("Retrain", check)]["outcome"] == "passed", check
    assert by[("Retrain", "utility_preserved")]["outcome"] == "passed"
