"""The shared fixture cache on object storage, against a local S3 server (moto) on 127.0.0.1.

Build once and reuse from another machine's mirror, corruption detected on download, two processes
racing to build the same fixture (one builds, the other downloads), and a plugin run on s3://.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from unlearn_audit.scenarios.cache import FixtureCache  # noqa: E402
from unlearn_audit.scenarios.recipes import load_profile_recipes  # noqa: E402
from unlearn_audit.scenarios.remote import RemoteCacheError  # noqa: E402

BUCKET = "audit-cache"


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials and endpoint as a user would give them: environment variables (fsspec reads
    FSSPEC_S3_* at import, so this process's config is patched too)."""
    import fsspec.config

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    return s3_endpoint


def gaussian():
    return load_profile_recipes("tiny")["gaussian"]


def test_built_once_then_downloaded_into_another_mirror(s3_env: str, tmp_path: Path, monkeypatch) -> None:
    url = f"s3://{BUCKET}/reuse"
    first = FixtureCache(tmp_path / "machine-a", remote=url)
    path_a = first.get_or_build(gaussian(), 0)
    assert first.verify_path(path_a) == [] and str(path_a).startswith(str(tmp_path / "machine-a" / "remote"))

    def no_build(*args, **kwargs):
        raise AssertionError("machine b rebuilt a fixture that was on the shared cache")

    second = FixtureCache(tmp_path / "machine-b", remote=url)
    monkeypatch.setattr(second, "_build_into", no_build)
    path_b = second.get_or_build(gaussian(), 0)
    assert second.verify_path(path_b) == []
    for name in ("meta.json", "weights.safetensors", "data.safetensors"):
        assert (path_a / name).read_bytes() == (path_b / name).read_bytes()
    assert not any(p.name.endswith(".lock") for p in s3_listing(url)), "the lock object was released"


def s3_listing(url: str) -> list[Path]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return [Path(p) for p in fs.find(root)]


def test_a_corrupt_remote_entry_is_refused(s3_env: str, tmp_path: Path) -> None:
    import fsspec

    url = f"s3://{BUCKET}/corrupt"
    path = FixtureCache(tmp_path / "a", remote=url).get_or_build(gaussian(), 0)
    fs, root = fsspec.core.url_to_fs(url)
    remote_weights = f"{root}/{path.parent.name}/{path.name}/weights.safetensors"
    data = bytearray(fs.cat_file(remote_weights))
    data[-1] ^= 0xFF
    fs.pipe_file(remote_weights, bytes(data))
    with pytest.raises(RemoteCacheError, match="checksum mismatch"):
        FixtureCache(tmp_path / "b", remote=url).get_or_build(gaussian(), 0)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("weights.safetensors"))


RACER = textwrap.dedent("""
    import json, sys
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.recipes import load_profile_recipes
    cache = FixtureCache(sys.argv[1], remote=sys.argv[2])
    built = []
    real = cache._build_into
    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)
    cache._build_into = counting
    path = cache.get_or_build(load_profile_recipes("tiny")["gaussian"], 1)
    print(json.dumps({"built": len(built), "sha256": json.loads((path / "meta.json").read_text())["sha256"]}))
""")


def test_two_processes_racing_build_it_once(s3_env: str, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/race"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / f"m{i}"), url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in racers:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["built"] for o in outs) == [0, 1], outs
    assert outs[0]["sha256"] == outs[1]["sha256"]


def test_the_plugin_audits_from_an_s3_cache(
    s3_env: str, pytester: pytest.Pytester, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "local"))
    result = pytester.runpytest_subprocess(
        "--unlearner",
        "unlearn_audit.methods:NoOp",
        "--audit-cache",
        f"s3://{BUCKET}/plugin",
        "-k",
        "budget and gaussian",
    )
    result.assert_outcomes(passed=1)
    assert any(p.name == "meta.json" for p in s3_listing(f"s3://{BUCKET}/plugin"))
