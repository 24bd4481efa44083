"""Built fixtures as one verified archive: `unlearn-audit fixtures pack` / `unpack`.

Why: a fixture of the GPU profile takes minutes of a GPU to build, and a CI runner (often without
network, or without write access to a shared cache) should not rebuild what another machine built.
`pack` writes chosen cache entries into one tar file (gzip-compressed if its name ends in `.gz`); `unpack`
puts them into another cache, so that an audit there builds nothing.

What makes it safe to move:
- a manifest first in the archive (`unlearn-audit-pack.json`) lists every entry and the SHA-256 of each
  of its files; `unpack` refuses any member the manifest does not list, any path outside its entry
  (absolute, `..`, links, devices), any file whose hash differs, and any entry that is incomplete or
  fails the fixture's own checksums (`FixtureCache.verify_path`);
- each entry is unpacked into a temporary folder beside its place and renamed into it under the
  entry's file lock, so a reader never sees half of one; an intact entry already there is kept;
- stored reference measurements (`measurements/`) travel only with `--measurements`: they are valid
  only where torch, the device and the harness's code are the same (they are keyed by these, so stale
  ones are recomputed, never used).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from unlearn_audit.scenarios.cache import META_FILE, CacheEntry, FixtureCache, sha256_file
from unlearn_audit.scenarios.prepared import MEASUREMENTS_DIR

MANIFEST = "unlearn-audit-pack.json"
PACK_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*-seed\d+-[0-9a-f]{16}$")


class PackError(ValueError):
    """An archive that is not a pack, or that does not verify."""


@dataclass(frozen=True)
class PackedEntry:
    path: str  # "<profile>/<scenario>-seed<k>-<key16>"
    files: dict[str, str]  # relative path -> SHA-256
    size: int


@dataclass(frozen=True)
class UnpackResult:
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already there and intact
    replaced: list[str] = field(default_factory=list)  # there but corrupt or incomplete


def _entry_files(entry: Path, with_measurements: bool) -> list[str]:
    files = []
    for path in sorted(entry.rglob("*")):
        rel = path.relative_to(entry)
        if not path.is_file() or path.is_symlink() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] == MEASUREMENTS_DIR and not with_measurements:
            continue
        if path.suffix == ".lock":
            continue
        files.append(rel.as_posix())
    return files


def select_entries(
    cache: FixtureCache,
    *,
    profile: str | None = None,
    scenarios: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[CacheEntry]:
    wanted_scenarios = set(scenarios) if scenarios else None
    wanted_seeds = set(seeds) if seeds is not None else None
    return [
        e
        for e in cache.entries()
        if (profile is None or e.meta.get("profile") == profile)
        and (wanted_scenarios is None or e.meta.get("scenario") in wanted_scenarios)
        and (wanted_seeds is None or e.meta.get("seed") in wanted_seeds)
    ]


def pack(
    cache: FixtureCache,
    archive: Path,
    entries: list[CacheEntry],
    *,
    with_measurements: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[PackedEntry]:
    """Write `entries` of `cache` (each verified first) into `archive`, atomically."""
    if not entries:
        raise PackError(
            "no built fixtures match: build them first (unlearn-audit fixtures build), or widen the selection"
        )
    packed: list[PackedEntry] = []
    for entry in entries:
        problems = cache.verify_path(entry.path)
        if problems:
            raise PackError(f"refusing to pack a fixture that does not verify: {'; '.join(problems)}")
        rel = entry.path.relative_to(cache.root).as_posix()
        files = _entry_files(entry.path, with_measurements)
        hashes = {name: sha256_file(entry.path / name) for name in files}
        packed.append(PackedEntry(rel, hashes, sum((entry.path / n).stat().st_size for n in files)))
    manifest = {
        "format": PACK_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "measurements": with_measurements,
        "entries": [{"path": p.path, "files": p.files} for p in packed],
    }
    archive = archive.expanduser().resolve()
    archive.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".tmp", dir=archive.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
            for p in packed:
                root = cache.root / p.path
                for name in p.files:
                    info = tarfile.TarInfo(f"{p.path}/{name}")
                    info.size, info.mode = (root / name).stat().st_size, 0o644
                    with open(root / name, "rb") as f:
                        tar.addfile(info, f)
                if progress is not None:
                    progress(f"packed {p.path} ({len(p.files)} files, {p.size / 2**20:.1f} MiB)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return packed


def _checked_manifest(data: bytes) -> dict[str, dict[str, str]]:
    """{entry path: {file: sha256}} from a manifest, every name checked against what a cache holds."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise PackError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(
            f"{MANIFEST}: format {manifest.get('format') if isinstance(manifest, dict) else '?'} "
            f"is not {PACK_FORMAT} (made by another version of unlearn-audit?)"
        )
    out: dict[str, dict[str, str]] = {}
    for e in manifest.get("entries", []):
        path, files = e.get("path", ""), e.get("files", {})
        parts = path.split("/")
        if len(parts) != 2 or not _NAME.match(parts[0]) or not _ENTRY.match(parts[1]):
            raise PackError(f"{MANIFEST}: {path!r} is not a fixture entry (<profile>/<scenario>-seed<k>-<key>)")
        if META_FILE not in files:
            raise PackError(f"{MANIFEST}: {path} has no {META_FILE}")
        for name, digest in files.items():
            if not all(_NAME.match(part) for part in name.split("/")) or not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
                raise PackError(f"{MANIFEST}: {path}: unexpected file {name!r}")
        out[path] = dict(files)
    if not out:
        raise PackError(f"{MANIFEST} lists no fixtures")
    return out


def unpack(archive: Path, cache: FixtureCache, *, progress: Callable[[str], None] | None = None) -> UnpackResult:
    """Verify `archive` and move its fixtures into `cache` (see the module docstring)."""
    result = UnpackResult()
    staged: dict[str, Path] = {}
    seen: dict[str, set[str]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise PackError(f"{archive}: not an unlearn-audit pack (its first member is not {MANIFEST})")
            handle = tar.extractfile(first)
            assert handle is not None
            manifest = _checked_manifest(handle.read())
            for member in tar:
                if member.offset == first.offset or member.isdir():
                    continue  # the manifest itself (iteration starts again at the first member)
                parts = member.name.split("/")
                rel_entry, name = "/".join(parts[:2]), "/".join(parts[2:])
                expected = manifest.get(rel_entry, {}).get(name)
                if expected is None or not member.isfile():
                    raise PackError(
                        f"{archive}: unexpected member {member.name!r} (not in the manifest, or not a file)"
                    )
                if name in seen.setdefault(rel_entry, set()):
                    raise PackError(f"{archive}: {member.name} appears twice")
                if rel_entry not in staged:
                    parent = cache.root / rel_entry.split("/")[0]
                    parent.mkdir(parents=True, exist_ok=True)
                    staged[rel_entry] = Path(tempfile.mkdtemp(prefix=f".{rel_entry.split('/')[1]}.unpack-", dir=parent))
                target = staged[rel_entry] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                h = hashlib.sha256()
                with open(target, "wb") as out:
                    for chunk in iter(lambda: source.read(1 << 20), b""):  # noqa: B023 (called within this iteration)
                        h.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != expected:
                    raise PackError(f"{archive}: {member.name}: checksum mismatch (the archive is corrupt)")
                seen[rel_entry].add(name)
        for rel_entry, files in manifest.items():
            missing = set(files) - seen.get(rel_entry, set())
            if missing:
                raise PackError(f"{archive}: {rel_entry} is incomplete (missing {', '.join(sorted(missing))})")
            problems = cache.verify_path(staged[rel_entry])
            if problems:
                raise PackError(f"{archive}: {rel_entry} does not verify: {'; '.join(problems)}")
        for rel_entry, tmp in staged.items():
            dest = cache.root / rel_entry
            with FileLock(str(dest) + ".lock"):
                if (dest / META_FILE).is_file() and not cache.verify_path(dest):
                    result.kept.append(rel_entry)
                    shutil.rmtree(tmp)
                    continue
                (result.replaced if dest.exists() else result.added).append(rel_entry)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(tmp, dest)
            if progress is not None:
                progress(f"unpacked {rel_entry}")
    except tarfile.TarError as exc:
        raise PackError(f"{archive}: not a readable tar archive ({exc})") from None
    finally:
        for tmp in staged.values():
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return result
