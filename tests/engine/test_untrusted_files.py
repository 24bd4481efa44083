"""Reading a job's result files, which the method could have replaced (`engine.untrusted_files`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unlearn_audit.engine.untrusted_files import UntrustedFileError, read_result, read_result_tail


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_bytes(b"{}")
    assert read_result(tmp_path, "report.json", 10) == b"{}"
    assert read_result_tail(tmp_path, "report.json", 10) == "{}"


def test_a_missing_file_is_not_found_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_result(tmp_path, "report.json", 10)
    assert read_result_tail(tmp_path, "stdout.txt", 10) == ""


def test_only_the_tail_of_a_long_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "stdout.txt").write_bytes(b"x" * 100 + b"the end")
    assert read_result_tail(tmp_path, "stdout.txt", 7) == "[... 100 bytes cut ...]\nthe end"
    with pytest.raises(UntrustedFileError, match="107 bytes, more than the 50"):
        read_result(tmp_path, "stdout.txt", 50)


@pytest.mark.parametrize("kind", ["FIFO", "symbolic link", "directory"])
def test_anything_but_a_regular_file_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the reference")
    jobs = tmp_path / "job"
    jobs.mkdir()
    target = jobs / "stdout.txt"
    if kind == "FIFO":
        os.mkfifo(target)  # opening it for reading in the usual way would wait for a writer
    elif kind == "symbolic link":
        target.symlink_to(secret)
    else:
        target.mkdir()
    with pytest.raises(UntrustedFileError, match=f"not a regular file \\(a {kind}\\)"):
        read_result(jobs, "stdout.txt", 100)
    assert read_result_tail(jobs, "stdout.txt", 100) == f"[not read: stdout.txt is not a regular file (a {kind})]"


def test_a_job_folder_replaced_by_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "cache-entry"
    elsewhere.mkdir()
    (elsewhere / "weights.safetensors").write_bytes(b"the reference's weights")
    job = tmp_path / "job"
    job.symlink_to(elsewhere)
    with pytest.raises(UntrustedFileError, match="could not be opened as a folder"):
        read_result(job, "weights.safetensors", 100)
    assert read_result_tail(job, "weights.safetensors", 100).startswith("[not read: job/ could not be opened")
