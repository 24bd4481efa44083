"""The request file each job gets: its own copy, so that no method can change another's data."""

from __future__ import annotations

import os
from pathlib import Path

from unlearn_audit.engine.isolated import share_read_only


def test_each_job_gets_a_copy_that_a_method_cannot_turn_against_other_jobs(tmp_path: Path) -> None:
    """Red-teamed: with a hard link shared by every job of a fixture, a method made the file writable
    (`chmod` is its owner's right, whatever Landlock says) and changed another method's data mid-run."""
    source = tmp_path / "harness" / "request.safetensors"
    source.parent.mkdir()
    source.write_bytes(b"the fixture's request data")
    source.chmod(0o400)
    jobs = [tmp_path / f"job-{i}" / "request.safetensors" for i in range(2)]
    for target in jobs:
        target.parent.mkdir()
        share_read_only(source, target)
        assert target.read_bytes() == source.read_bytes()
        assert target.stat().st_mode & 0o777 == 0o400
    assert len({os.stat(p).st_ino for p in (source, *jobs)}) == 3  # no inode shared

    jobs[0].chmod(0o600)  # what a hostile method may do to its own copy
    jobs[0].write_bytes(b"poisoned")
    assert source.read_bytes() == b"the fixture's request data"
    assert jobs[1].read_bytes() == b"the fixture's request data"
