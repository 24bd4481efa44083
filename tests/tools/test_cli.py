"""`unlearn-audit fixtures build|list|verify|clean`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_audit.scenarios.cache import WEIGHTS_FILE, FixtureCache
from unlearn_audit.tools.cli import main


def test_build_list_verify_clean(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "c"
    assert main(["fixtures", "build", "--cache", str(cache), "--scenario", "gaussian", "--seeds", "0-0"]) == 0
    out = capsys.readouterr().out
    assert "tiny/gaussian seed 0" in out and "attack effective" in out
    assert main(["fixtures", "list", "--cache", str(cache)]) == 0
    listed = capsys.readouterr().out
    from unlearn_audit.scenarios.provenance import fixture_id

    assert "gaussian" in listed and str(fixture_id(FixtureCache(cache).entries()[0].meta)) in listed
    assert main(["fixtures", "verify", "--cache", str(cache)]) == 0
    assert "1 intact, 0 corrupt" in capsys.readouterr().out
    entry = FixtureCache(cache).entries()[0]
    (entry.path / WEIGHTS_FILE).write_bytes(b"tampered")
    assert main(["fixtures", "verify", "--cache", str(cache)]) == 1
    verified = capsys.readouterr().out
    assert "CORRUPT" in verified and "fixtures clean" not in verified  # clean would wipe the intact ones too
    rebuild = f"unlearn-audit fixtures build --cache {cache} --profile tiny --scenario gaussian --seeds 0-0"
    assert "rebuilds it by itself" in verified and rebuild in verified.replace("\n", "")
    with pytest.warns(UserWarning, match="rebuilding corrupt fixture"):
        assert main(rebuild.split()[1:]) == 0  # the advice works: the corrupt entry is built again
    capsys.readouterr()
    assert main(["fixtures", "verify", "--cache", str(cache)]) == 0
    assert "1 intact, 0 corrupt" in capsys.readouterr().out
    assert main(["fixtures", "clean", "--profile", "nosuch", "--cache", str(cache)]) == 2
    assert "unknown profile 'nosuch'" in capsys.readouterr().out and FixtureCache(cache).entries()
    assert main(["fixtures", "clean", "--cache", str(cache)]) == 0
    assert "removed 1 fixture" in capsys.readouterr().out
    assert FixtureCache(cache).entries() == []


def test_bad_arguments(tmp_path: Path, capsys) -> None:
    assert main(["fixtures", "build", "--cache", str(tmp_path), "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().out
    assert main(["fixtures", "build", "--cache", str(tmp_path), "--scenario", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # seeds as --audit-seeds takes them: N >= 1, A-B, A,B,...
        main(["fixtures", "build", "--cache", str(tmp_path), "--seeds", "0"])
    assert exited.value.code == 2 and "expected N, A-B or A,B,..." in capsys.readouterr().err


@pytest.mark.parametrize("action", ["list", "verify", "build", "clean", "unpack"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "s3://bucket/prefix"])
def test_fixtures_commands_refuse_a_cache_url(
    action: str, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["fixtures", action, *(["archive.tar"] if action == "unpack" else []), "--cache", url]
    assert main(argv) == 2
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"--cache {url} is a URL, but this command works on a local cache directory only" in out
    assert "pytest --audit-cache URL" in out
    assert list(tmp_path.iterdir()) == []  # no folder `http:` / `s3:` made here


def test_a_file_url_is_a_local_cache(tmp_path: Path, capsys) -> None:
    assert main(["fixtures", "list", "--cache", f"file://{tmp_path / 'c'}"]) == 0
    assert f"no fixtures in {tmp_path / 'c'}" in capsys.readouterr().out.replace("\n", "")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "unlearn_audit.tools.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fixtures" in out.stdout


def report(path: Path, score: float, seconds: float) -> Path:
    result = {
        "nodeid": "n",
        "unlearner": "m:M",
        "check": "utility_preserved",
        "scenario": "s",
        "profile": "tiny",
        "seed": 0,
        "budget": 0.1,
        "outcome": "passed",
        "verdict": "pass",
        "score": score,
        "details": {"seconds": seconds, "gap": 0.01},
    }
    path.write_text(json.dumps({"schema_version": 1, "results": [result]}))
    return path


def test_diff_lists_every_changed_result_and_ignores_timings(tmp_path: Path) -> None:
    same = report(tmp_path / "a.json", 0.9, 1.0), report(tmp_path / "b.json", 0.9, 2.0)
    assert main(["diff", *map(str, same)]) == 0
    assert main(["diff", str(same[0]), str(report(tmp_path / "c.json", 0.8, 1.0))]) == 1


def test_diff_says_first_that_a_result_was_measured_on_another_fixture_build(tmp_path: Path, capsys) -> None:
    def on(path: Path, fixture: str) -> Path:
        doc = json.loads(path.read_text())
        doc["results"][0]["meta"] = {"fixture_id": fixture, "fixture_built_with": f"torch on {fixture}"}
        path.write_text(json.dumps(doc))
        return path

    old, new = on(report(tmp_path / "a.json", 0.9, 1.0), "avx512"), on(report(tmp_path / "b.json", 0.8, 1.0), "avx2")
    assert main(["diff", str(old), str(new)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "fixture avx512 -> avx2 (built with torch on avx512 -> torch on avx2)" in lines[0]
    assert "score 0.9 -> 0.8" in lines[1]


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        ("{not json", "not a JSON report"),
        ('{"schema_version": 3}', "no list of 'results'"),
        ('{"results": [1]}', "malformed"),
    ],
)
def test_diff_of_a_file_that_is_not_a_report_exits_2_not_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str | None, expected: str
) -> None:
    """Exit 1 means 'the reports differ' to a CI step; a missing or broken file must not say that."""
    good = report(tmp_path / "good.json", 0.8, 0.9)
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert main(["diff", str(good), str(bad)]) == 2
    out = capsys.readouterr().out
    assert expected in out and "bad.json" in out and "Traceback" not in out


def test_version(capsys: pytest.CaptureFixture) -> None:
    from unlearn_audit import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"unlearn-audit {__version__}"
