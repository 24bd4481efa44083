"""`unlearn-audit fixtures pack` / `unpack`: built fixtures moved as one verified archive.

A second cache directory (a second machine) audits from the pack without building anything; an archive
that was tampered with, that reaches outside its entries, or that is not a pack is refused, and nothing
of it lands in the cache.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from unlearn_audit.scenarios.cache import FixtureCache
from unlearn_audit.scenarios.pack import MANIFEST, PackError, pack, select_entries, unpack
from unlearn_audit.scenarios.recipes import load_profile_recipes
from unlearn_audit.tools.cli import main as cli


def _gaussian_pack(tiny_cache: Path, archive: Path, **kwargs) -> list:
    cache = FixtureCache(tiny_cache)
    return pack(cache, archive, select_entries(cache, profile="tiny", scenarios=["gaussian"], seeds=[0]), **kwargs)


def test_a_second_cache_audits_from_the_pack_without_building(
    tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "fixtures.tar.gz"
    assert (
        cli(
            [
                "fixtures",
                "pack",
                str(archive),
                "--cache",
                str(tiny_cache),
                "--profile",
                "tiny",
                "--scenario",
                "gaussian",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    second = tmp_path / "second"
    assert cli(["fixtures", "unpack", str(archive), "--cache", str(second)]) == 0
    recipe = load_profile_recipes("tiny")["gaussian"]
    cache = FixtureCache(second)

    def no_build(*args, **kwargs):
        raise AssertionError("the second cache rebuilt a fixture that came in the pack")

    monkeypatch.setattr(FixtureCache, "_build_into", no_build)
    path = cache.get_or_build(recipe, 0)
    original = FixtureCache(tiny_cache).path_for(recipe, 0)
    for name in ("meta.json", "weights.safetensors", "data.safetensors"):
        assert (path / name).read_bytes() == (original / name).read_bytes()
    from unlearn_audit.engine.session import AuditOptions, AuditSession

    audit = AuditSession(AuditOptions(profile="tiny", cache_dir=second, isolation="inline"))
    result, meta = audit.run_check("gaussian_leakage", "unlearn_audit.methods:NoOp", "gaussian", 0)
    audit.close()
    assert result.verdict == "fail"  # NoOp keeps the poison: the unpacked fixture judges as the original does
    # The result names the packed build, so a baseline measured on the first cache compares with it.
    from unlearn_audit.scenarios.provenance import fixture_id

    assert meta["fixture_id"] == fixture_id(json.loads((original / "meta.json").read_text()))
    # Unpacking again keeps what is there.
    assert cli(["fixtures", "unpack", str(archive), "--cache", str(second)]) == 0


def test_measurements_travel_only_when_asked(tiny_cache: Path, tmp_path: Path) -> None:
    from unlearn_audit.engine.session import AuditOptions, AuditSession

    AuditSession(AuditOptions(profile="tiny", cache_dir=tiny_cache)).prepare_references("gaussian", 0)
    for flag, expected in ((False, False), (True, True)):
        archive = tmp_path / f"m{flag}.tar"
        (packed,) = _gaussian_pack(tiny_cache, archive, with_measurements=flag)
        assert any(name.startswith("measurements/") for name in packed.files) is expected


def _rewrite(archive: Path, out: Path, edit) -> Path:
    """Copy `archive` member by member through `edit(name, data) -> (name, data) | None`."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else b""
            edited = edit(member.name, data)
            if edited is None:
                continue
            info = tarfile.TarInfo(edited[0])
            info.size = len(edited[1])
            dst.addfile(info, io.BytesIO(edited[1]))
    return out


@pytest.mark.parametrize(
    "case, match",
    [
        ("flip a byte of the weights", "checksum mismatch"),
        ("drop the data file", "incomplete"),
        ("add a member", "unexpected member"),
        ("escape the entry", "not a fixture entry"),
        ("no manifest first", "not an unlearn-audit pack"),
    ],
)
def test_a_bad_archive_is_refused_and_nothing_lands(tiny_cache: Path, tmp_path: Path, case: str, match: str) -> None:
    good = tmp_path / "good.tar"
    _gaussian_pack(tiny_cache, good)

    def edit(name: str, data: bytes):
        if case == "flip a byte of the weights" and name.endswith("weights.safetensors"):
            return name, data[:-1] + bytes([data[-1] ^ 0xFF])
        if case == "drop the data file" and name.endswith("data.safetensors"):
            return None
        if case == "escape the entry" and name == MANIFEST:
            doc = json.loads(data)
            doc["entries"][0]["path"] = "../outside"
            return name, json.dumps(doc).encode()
        if case == "no manifest first" and name == MANIFEST:
            return None
        return name, data

    bad = _rewrite(good, tmp_path / "bad.tar", edit)
    if case == "add a member":
        with tarfile.open(bad, "a") as tar:
            info = tarfile.TarInfo(
                "tiny/"
                + next(p for p in json.loads(tarfile.open(good).extractfile(MANIFEST).read())["entries"])["path"].split(
                    "/"
                )[1]
                + "/extra.py"
            )
            info.size = 3
            tar.addfile(info, io.BytesIO(b"x=1"))
    target = tmp_path / "target"
    with pytest.raises(PackError, match=match):
        unpack(bad, FixtureCache(target))
    assert not list(target.rglob("*.safetensors")), "nothing of a refused archive lands in the cache"
    assert not (tmp_path / "outside").exists()


def test_packing_nothing_or_a_corrupt_fixture_is_an_error(tiny_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(PackError, match="no built fixtures match"):
        pack(FixtureCache(tmp_path / "empty"), tmp_path / "x.tar", [])
    copy = tmp_path / "copy"
    shutil.copytree(tiny_cache, copy)
    cache = FixtureCache(copy)
    (entry,) = select_entries(cache, scenarios=["gaussian"], seeds=[0])
    with open(entry.path / "weights.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(PackError, match="does not verify"):
        pack(cache, tmp_path / "y.tar", [entry])
    assert not (tmp_path / "y.tar").exists()


def test_unpack_of_a_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["fixtures", "unpack", str(tmp_path / "nope.tar"), "--cache", str(tmp_path / "c")]) == 2
    assert "no such archive" in capsys.readouterr().out
