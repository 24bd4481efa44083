"""The Landlock sandbox: the allow-list arithmetic, and a confined process trying what a hostile method
would (read the cache, the harness's command line and environment, write outside its directory,
signal its parent, connect over TCP), each in a child process so that this one stays free."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.engine.sandbox import (
    DEVICES,
    GPU_DEVICES,
    SandboxStatus,
    confine,
    grants_around,
    landlock_abi,
    worker_plan,
)

ABI = landlock_abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="this kernel has no Landlock")


def test_grants_around_a_denied_folder(tmp_path: Path) -> None:
    for name in ("a/x", "a/cache/entries", "a/cache/other", "b"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "a" / "file.py").write_text("")
    (tmp_path / "a" / "current").symlink_to(tmp_path / "a")  # granting it would grant what it opens: all of a/
    granted = grants_around(tmp_path, [tmp_path / "a" / "cache" / "entries"])
    assert set(granted) == {
        tmp_path / "a" / "x",
        tmp_path / "a" / "file.py",
        tmp_path / "a" / "cache" / "other",
        tmp_path / "b",
    }
    assert grants_around(tmp_path / "b", [tmp_path / "a"]) == [tmp_path / "b"], "unrelated: granted whole"
    assert grants_around(tmp_path / "a", [tmp_path / "a"]) == [], "the denied folder itself: nothing"
    # red-teamed: a path inside a denied folder (a fake editable distribution named `<cache>/tiny`)
    assert grants_around(tmp_path / "a" / "cache" / "other", [tmp_path / "a" / "cache"]) == []
    # a carved folder (the fork server's `/proc`) is left out of a grant above it, not out of one inside it
    carved = [tmp_path / "a" / "cache"]
    assert tmp_path / "a" / "cache" / "other" not in grants_around(tmp_path, [], carved)
    assert tmp_path / "a" / "x" in grants_around(tmp_path, [], carved)
    assert grants_around(tmp_path / "a" / "cache" / "other", [], carved) == [tmp_path / "a" / "cache" / "other"]


def test_no_landlock_says_so_and_goes_on() -> None:
    from unlearn_audit.engine.sandbox import SandboxPlan

    status = confine(SandboxPlan(read=(), write=(), devices=()), abi=0)
    assert status.describe().startswith("none: Landlock is not available")
    assert SandboxStatus(7, ("fs", "signals", "net")).describe() == "landlock abi 7: fs, signals, net"


PROBE = """
import json, os, signal, socket, subprocess, sys
from unlearn_audit.engine.sandbox import confine, worker_plan
home, project, cache, allow_network = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
status = confine(worker_plan(home, [project, *[p for p in sys.path if p]], [cache], allow_network=allow_network))
seen = {"status": status.describe()}

def attempt(name, action):
    try:
        action()
        seen[name] = "allowed"
    except OSError as exc:
        seen[name] = f"denied ({exc.errno})"

attempt("read cache", lambda: open(os.path.join(cache, "secret.txt")).read())
attempt("read project", lambda: open(os.path.join(project, "mod.py")).read())
attempt("read cache through a link", lambda: open(os.path.join(project, "latest", "secret.txt")).read())
attempt("read the unix socket list", lambda: open("/proc/self/net/unix").read())
attempt("read own status", lambda: open("/proc/self/status").read())
attempt("read parent cmdline", lambda: open(f"/proc/{os.getppid()}/cmdline").read())
attempt("read parent environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("write home", lambda: open(os.path.join(home, "out.txt"), "w").write("x"))
attempt("write project", lambda: open(os.path.join(project, "out.txt"), "w").write("x"))
attempt("signal parent", lambda: os.kill(os.getppid(), 0))
listener = None
def bind():
    global listener
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
attempt("bind tcp", bind)
import torch
seen["torch"] = float(torch.ones(3).sum())
seen["child"] = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout.strip()
print(json.dumps(seen))
"""


def run_confined(tmp_path: Path, allow_network: bool = False) -> dict[str, str]:
    home, project = tmp_path / "home", tmp_path / "project"
    cache = project / ".cache" / "unlearn-audit"  # the cache beneath a granted folder: still denied
    for folder in (home, cache):
        folder.mkdir(parents=True)
    (cache / "secret.txt").write_text("the retrain reference")
    (project / "mod.py").write_text("X = 1\n")
    (project / "latest").symlink_to(cache)  # a link beside the cache, to it (as pytest's `*current` links are)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    done = subprocess.run(
        [sys.executable, str(probe), str(home), str(project), str(cache), "1" if allow_network else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_landlock
def test_a_confined_process_keeps_what_it_needs_and_nothing_else(tmp_path: Path) -> None:
    seen = run_confined(tmp_path)
    assert seen["status"].startswith(f"landlock abi {ABI}: fs")
    assert seen["read project"] == "allowed" and seen["write home"] == "allowed"
    assert seen["torch"] == 3.0 and seen["child"] == "1", "torch and child processes still work"
    assert seen["read cache"].startswith("denied"), "the cache, though beneath the granted project"
    assert seen["read cache through a link"].startswith("denied"), "a link in the project leads to the cache"
    assert seen["read the unix socket list"].startswith("denied") and seen["read own status"] == "allowed"
    assert seen["read parent cmdline"].startswith("denied")
    assert seen["read parent environ"].startswith("denied")
    assert seen["write project"].startswith("denied")
    if ABI >= 6:
        assert seen["signal parent"].startswith("denied") and "signals" in seen["status"]
    if ABI >= 4:
        assert seen["bind tcp"].startswith("denied") and "net" in seen["status"]


@pytest.mark.skipif(ABI < 4, reason="network rules need Landlock ABI 4")
def test_the_network_can_be_allowed(tmp_path: Path) -> None:
    seen = run_confined(tmp_path, allow_network=True)
    assert seen["bind tcp"] == "allowed" and "net" not in seen["status"]
    assert seen["read cache"].startswith("denied")


def test_only_a_cuda_worker_is_granted_the_gpu_device_files(tmp_path: Path) -> None:
    cpu = worker_plan(str(tmp_path), [], [])
    cuda = worker_plan(str(tmp_path), [], [], cuda=True)
    assert not set(GPU_DEVICES) & set(cpu.devices)
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/kfd", "/dev/dxg"} <= set(cuda.devices)
    assert set(DEVICES) <= set(cpu.devices) and set(DEVICES) <= set(cuda.devices)


LINKED_PACKAGE_PROBE = """
import json, sys
from pathlib import Path
from unlearn_audit.engine.worker_main import _confine
site, cache = sys.argv[1], sys.argv[2]
status = _confine({"sandbox": {"deny": [cache]}, "spec": "unlearn_audit.methods:NoOp", "device": "cpu"})
seen = {"status": status}
try:
    seen["read through a link"] = len(Path(site, "unlearn_audit", "methods", "__init__.py").read_text()) > 0
    import unlearn_audit.methods
    seen["imported"] = hasattr(unlearn_audit.methods, "NoOp")
except OSError as exc:
    seen["denied"] = exc.errno
print(json.dumps(seen))
"""


@needs_landlock
def test_the_harness_package_laid_out_as_links_is_readable_when_confined(tmp_path: Path) -> None:
    """The GPU benchmarks import a checkout through a folder of links to its entries (no install); a
    confined worker must read the links' targets, else the method's spec does not even resolve."""
    import unlearn_audit

    real = tmp_path / "checkout" / "unlearn_audit"  # a copy: this one's folder may be granted as an editable project
    shutil.copytree(
        Path(unlearn_audit.__file__).resolve().parent, real, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True
    )
    linked = tmp_path / "site" / "unlearn_audit"
    linked.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "__pycache__":
            (linked / entry.name).symlink_to(entry)
    cache = tmp_path / "cache"
    cache.mkdir()
    run = tmp_path / "run"  # the probe's folder and home, granted; the checkout beside it is not
    run.mkdir()
    probe = run / "probe.py"
    probe.write_text(textwrap.dedent(LINKED_PACKAGE_PROBE))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run(
        [sys.executable, str(probe), str(tmp_path / "site"), str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=run,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"].startswith("landlock"), seen
    assert seen.get("read through a link") and seen.get("imported"), seen
