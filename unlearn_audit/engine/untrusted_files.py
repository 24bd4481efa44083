"""Reading what a job left in the worker's directory, where the method may have replaced anything.

Why: the job's results (the report, the returned weights, what the method printed, the worker's log)
are written to the worker's private directory, the one place the confined method may write. By the
time the harness reads them the method may have put something else under their names, or replaced
the job's folder itself:

- a symbolic link to a file the worker may not read: the harness, unconfined, would follow it and copy
  the file into the report, or load a reference model as the method's weights;
- a FIFO: opening or reading it would block the harness until its timeout, for ever;
- a sparse file of terabytes that uses no disk: reading it whole would exhaust the harness's memory.

So the folder is opened without following a link, each file relative to it without following a link
and without blocking, it must be a regular file, and no more than a stated number of bytes is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UntrustedFileError(OSError):
    """A result file that is not a regular file, is larger than its limit, or could not be opened."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _open_regular(folder: Path, name: str) -> tuple[int, int]:
    """(fd, size) of `folder/name`, neither a link nor anything but a regular file; UntrustedFileError else."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        folder_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow | os.O_CLOEXEC)
    except OSError as exc:
        raise UntrustedFileError(f"{folder.name}/ could not be opened as a folder ({exc.strerror})") from exc
    try:
        try:
            fd = os.open(name, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC, dir_fd=folder_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            try:
                kind = _kind(os.lstat(name, dir_fd=folder_fd).st_mode)
            except OSError:
                kind = exc.strerror or "unreadable file"
            raise UntrustedFileError(f"{name} is not a regular file (a {kind})") from exc
    finally:
        os.close(folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UntrustedFileError(f"{name} is not a regular file (a {_kind(info.st_mode)})")
    return fd, info.st_size


def _read(fd: int, count: int) -> bytes:
    chunks, left = [], count
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_result(folder: Path, name: str, limit: int) -> bytes:
    """The whole of `folder/name`, which must be a regular file of at most `limit` bytes.

    FileNotFoundError if it is not there; UntrustedFileError if it is something else, or larger."""
    fd, size = _open_regular(folder, name)
    try:
        if size > limit:
            raise UntrustedFileError(f"{name} has {size} bytes, more than the {limit} a result may have")
        return _read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


def read_result_tail(folder: Path, name: str, limit: int) -> str:
    """The last `limit` bytes of `folder/name` as text, saying how much was cut; "" if it is not there, and a
    note in brackets (not the content) if it is not a regular file."""
    try:
        fd, size = _open_regular(folder, name)
    except FileNotFoundError:
        return ""
    except UntrustedFileError as exc:
        return f"[not read: {exc}]"
    try:
        start = max(0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        text = _read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)
    return f"[... {start} bytes cut ...]\n{text}" if start else text
