"""A fixture cache shared through object storage (`--audit-cache s3://bucket/prefix`, any fsspec URL).

Same guarantees as the local cache, across machines:

- **Built once.** A builder first creates `<entry>.lock` with an exclusive write (S3's conditional
  `If-None-Match: *`, which s3fs issues for mode "xb"); whoever fails to create it waits for the
  entry to appear instead of building it too. A lock older than `stale_after` seconds (a builder
  that died) is taken over.
- **Atomic for readers.** An entry's files are uploaded first and its `meta.json` last: readers
  only consider entries with a `meta.json`, so they never see a partial one.
- **Verified.** Downloaded files are checked against the SHA-256 sums in `meta.json` before the
  entry is moved into the local mirror; a mismatch is an error, never a silently used fixture.
- **Local copy.** Every entry used is kept in a local mirror (a `FixtureCache` directory), so
  later runs on the machine read it from disk.

Credentials and endpoints come from the environment as fsspec and botocore read them (e.g.
`AWS_ACCESS_KEY_ID`, `FSSPEC_S3_ENDPOINT_URL` for a non-AWS server). Locally computed reference
measurements (`measurements/`) stay in the mirror and are not uploaded.

**Read-only remotes.** An `http://`, `https://` or `hf://` URL (a web server or a Hugging Face repository
holding a cache directory's layout, e.g. one that `unlearn-audit fixtures pack` / `unpack` filled) is only
read: entries are fetched and verified as above, nothing is ever written or locked there, and an entry the
remote does not have is built locally into the mirror, with a warning that says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

META_FILE = "meta.json"
ENTRY_FILES = ("weights.safetensors", "data.safetensors")


class RemoteCacheError(RuntimeError):
    """A remote entry that does not verify, or a lock that was never released."""


READ_ONLY_SCHEMES = ("http", "https", "hf")
"""URL schemes of caches that are read, never written: publishing there is someone else's job."""


def is_remote(location: str | os.PathLike[str] | None) -> bool:
    """Whether a cache location is a URL of another machine's storage (`file://` is a local path)."""
    return location is not None and "://" in str(location) and not str(location).startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """A local cache location as a path: `file:///a/b` and `/a/b` are the same directory."""
    text = str(location)
    return Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()


def is_read_only(url: str) -> bool:
    return url.split("://", 1)[0].lower() in READ_ONLY_SCHEMES


def mirror_dir(url: str, base: Path) -> Path:
    """Where the local copy of a remote cache lives: one folder per URL under the local cache."""
    return base / "remote" / hashlib.sha256(url.encode()).hexdigest()[:16]


class RemoteStore:
    def __init__(
        self,
        url: str,
        *,
        poll_seconds: float = 1.0,
        stale_after: float = 6 * 3600.0,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec comes with the [s3] extra
            raise RemoteCacheError(
                "a remote --audit-cache needs fsspec (and s3fs for s3://): pip install 'unlearn-audit[s3]'"
            ) from exc
        self.url = url.rstrip("/")
        self.read_only = is_read_only(self.url)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except ImportError as exc:  # e.g. http:// without aiohttp, hf:// without huggingface_hub
            raise RemoteCacheError(
                f"--audit-cache {self.url}: {exc} (for http(s):// pip install 'unlearn-audit[http]'; "
                f"for hf:// pip install huggingface_hub)"
            ) from exc
        self.poll_seconds = poll_seconds
        self.stale_after = stale_after

    def _key(self, rel: str, name: str | None = None) -> str:
        return f"{self.root}/{rel}" + (f"/{name}" if name else "")

    def has(self, rel: str) -> bool:
        self.fs.invalidate_cache()  # s3fs caches listings; another machine may have just published
        # Reading the (small) meta.json, not `exists` or `info`: fsspec's http filesystem answers those with
        # False / FileNotFoundError for a server it cannot reach, which would look like a missing entry (and,
        # on a read-only cache, start a local build); reading it raises the connection error.
        try:
            self.fs.cat_file(self._key(rel, META_FILE))
            return True
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - connection errors differ by backend (aiohttp, botocore, ...)
            raise RemoteCacheError(f"cannot reach the fixture cache {self.url}: {type(exc).__name__}: {exc}") from exc

    def fetch(self, rel: str, dest: Path) -> None:
        """Download the entry into `dest` (which must not exist), verified, via a temporary folder."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            meta_bytes = self.fs.cat_file(self._key(rel, META_FILE))
            meta = json.loads(meta_bytes)
            for name, digest in meta.get("sha256", {}).items():
                if name not in ENTRY_FILES:  # names come from the bucket: never a path of our choosing
                    raise RemoteCacheError(f"{self._key(rel, META_FILE)}: unexpected file {name!r}")
                data = self.fs.cat_file(self._key(rel, name))
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RemoteCacheError(
                        f"{self._key(rel, name)}: checksum mismatch (the remote entry is corrupt; "
                        "delete it and it is rebuilt)"
                    )
                (tmp / name).write_bytes(data)
            (tmp / META_FILE).write_bytes(meta_bytes)
            os.replace(tmp, dest)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RemoteCacheError(f"cannot download {self._key(rel)} from {self.url}: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _writable(self) -> None:
        if self.read_only:
            raise RemoteCacheError(f"{self.url} is a read-only fixture cache: nothing is written or locked there")

    def publish(self, rel: str, entry: Path) -> None:
        """Upload a built entry: every file first, `meta.json` last (the commit marker)."""
        self._writable()
        meta = json.loads((entry / META_FILE).read_text())
        for name in meta.get("sha256", {}):
            self.fs.pipe_file(self._key(rel, name), (entry / name).read_bytes())
        self.fs.pipe_file(self._key(rel, META_FILE), (entry / META_FILE).read_bytes())

    @contextlib.contextmanager
    def build_lock(self, rel: str, done: Callable[[], bool]) -> Iterator[bool]:
        """Yield True while holding the entry's lock object (build it), or False once `done()` says
        another machine finished it (fetch it instead)."""
        self._writable()
        lock = self._key(rel) + ".lock"
        token = uuid.uuid4().hex
        while True:
            try:
                with self.fs.open(lock, "xb") as f:
                    f.write(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "token": token}).encode())
                break
            except FileExistsError:
                if done():
                    yield False
                    return
                if self._lock_age(lock) > self.stale_after:
                    self.fs.rm_file(lock)  # its builder died: take over
                    continue
                time.sleep(self.poll_seconds)
        try:
            yield True
        finally:
            # Only our own lock: after a (wrong) stale takeover another builder may hold it now.
            with contextlib.suppress(FileNotFoundError, ValueError, AttributeError):
                if json.loads(self.fs.cat_file(lock)).get("token") == token:
                    self.fs.rm_file(lock)

    def _lock_age(self, lock: str) -> float:
        """Seconds since the lock object was written, by the store's clock (not another host's)."""
        try:
            self.fs.invalidate_cache()
            modified = self.fs.info(lock).get("LastModified") or self.fs.info(lock).get("mtime")
        except FileNotFoundError:
            return 0.0
        if modified is None:
            return 0.0
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
        return time.time() - stamp
