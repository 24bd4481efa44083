"""A read-only fixture cache on a web server (`--audit-cache http://...`), against a local HTTP server on
127.0.0.1 that the tests start and stop.

Fetched and verified into the local mirror, never written or locked (the server records every request:
only GET and HEAD), a corrupt file refused, a missing entry built locally with a warning, a server that
is down named in the error, and a plugin run that audits from it.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")  # fsspec's http filesystem (the [http] extra)

from unlearn_audit.scenarios.cache import FixtureCache  # noqa: E402
from unlearn_audit.scenarios.recipes import load_profile_recipes  # noqa: E402
from unlearn_audit.scenarios.remote import RemoteCacheError  # noqa: E402


class Served:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.methods: list[str] = []
        served = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def handle_one_request(self) -> None:
                super().handle_one_request()
                if getattr(self, "command", None):
                    served.methods.append(self.command)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cache"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def served(tiny_cache: Path, tmp_path: Path) -> Iterator[Served]:
    """A copy of the built `tiny` gaussian fixture (seed 0) under /cache/ of a local web server."""
    root = tmp_path / "www"
    recipe = load_profile_recipes("tiny")["gaussian"]
    entry = FixtureCache(tiny_cache).path_for(recipe, 0)
    shutil.copytree(entry, root / "cache" / "tiny" / entry.name, ignore=shutil.ignore_patterns("measurements"))
    server = Served(root)
    yield server
    server.stop()


def gaussian():
    return load_profile_recipes("tiny")["gaussian"]


def test_fetched_verified_and_never_written(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FixtureCache(tmp_path / "local", remote=served.url)

    def no_build(*args, **kwargs):
        raise AssertionError("a fixture on the read-only cache was rebuilt")

    monkeypatch.setattr(cache, "_build_into", no_build)
    path = cache.get_or_build(gaussian(), 0)
    assert cache.verify_path(path) == [] and str(path).startswith(str(tmp_path / "local" / "remote"))
    served_entry = served.root / "cache" / "tiny" / path.name
    for name in ("meta.json", "weights.safetensors", "data.safetensors"):
        assert (path / name).read_bytes() == (served_entry / name).read_bytes()
    assert served.methods and set(served.methods) <= {"GET", "HEAD"}, served.methods
    assert not list(served.root.rglob("*.lock"))
    # The second time it comes from the mirror: no request at all.
    before = len(served.methods)
    assert FixtureCache(tmp_path / "local", remote=served.url).get_or_build(gaussian(), 0) == path
    assert len(served.methods) == before


def test_a_corrupt_file_on_the_server_is_refused(served: Served, tmp_path: Path) -> None:
    (entry,) = (served.root / "cache" / "tiny").iterdir()
    weights = entry / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RemoteCacheError, match="checksum mismatch"):
        FixtureCache(tmp_path / "local", remote=served.url).get_or_build(gaussian(), 0)
    assert not any((tmp_path / "local").rglob("weights.safetensors"))


def test_an_entry_the_server_lacks_is_built_here_with_a_warning(served: Served, tmp_path: Path) -> None:
    cache = FixtureCache(tmp_path / "local", remote=served.url)
    with pytest.warns(UserWarning, match="building it here, into the local mirror"):
        path = cache.get_or_build(gaussian(), 1)  # seed 1 is not served
    assert cache.verify_path(path) == []
    assert set(served.methods) <= {"GET", "HEAD"}, served.methods
    assert not (served.root / "cache" / "tiny" / path.name).exists()


def test_a_server_that_is_down_is_named(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(RemoteCacheError, match=f"cannot reach the fixture cache http://127.0.0.1:{port}"):
        FixtureCache(tmp_path / "local", remote=f"http://127.0.0.1:{port}/cache").get_or_build(gaussian(), 0)


def test_publishing_to_a_read_only_cache_is_refused(tmp_path: Path) -> None:
    from unlearn_audit.scenarios.remote import RemoteStore

    store = RemoteStore("https://example.invalid/fixtures")
    assert store.read_only
    with pytest.raises(RemoteCacheError, match="read-only fixture cache"):
        store.publish("tiny/x", tmp_path)
    with pytest.raises(RemoteCacheError, match="read-only fixture cache"):
        with store.build_lock("tiny/x", done=lambda: False):
            pass


def test_the_plugin_audits_from_a_web_server(
    served: Served, pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "local"))
    result = pytester.runpytest_subprocess(
        "--unlearner", "unlearn_audit.methods:NoOp", "--audit-cache", served.url, "-k", "budget and gaussian"
    )
    result.assert_outcomes(passed=1)
    assert set(served.methods) <= {"GET", "HEAD"}, served.methods


def test_the_plugin_names_a_server_that_is_down_in_one_line(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usage error (exit 4) that names the server, not pytest's INTERNALERROR traceback of 124 lines."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "local"))
    result = pytester.runpytest_subprocess(
        "--unlearner", "unlearn_audit.methods:NoOp", "--audit-cache", f"http://127.0.0.1:{port}", "-k", "gaussian"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--audit-cache: cannot reach the fixture cache http://127.0.0.1:{port}*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
