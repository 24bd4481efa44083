"""Worker processes forked from the fork server: as isolated as spawned ones, and their ends reported.

The hostile methods of tests/plugin/test_isolation.py (exits, segfaults, memory, hangs, global state,
reference theft) run through the fork server too; these tests check the server's own contract.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from unlearn_audit.engine import fork_server
from unlearn_audit.engine.fork_server import ForkedProcess, connect_fork_server, fork_server_wanted
from unlearn_audit.engine.worker import UnlearnerWorker, describe_exit, prepare_fork_server

NOOP = "unlearn_audit.methods:NoOp"


@pytest.fixture
def own_servers(monkeypatch: pytest.MonkeyPatch):
    """A fork server for this test alone (the process-wide one stays untouched), closed afterwards."""
    monkeypatch.delenv(fork_server.DISABLE_ENV, raising=False)
    servers: dict = {}
    monkeypatch.setattr(fork_server, "_servers", servers)
    yield servers
    for server in servers.values():
        server.close()


def started(spec: str = NOOP) -> UnlearnerWorker:
    worker = UnlearnerWorker(spec)
    worker.start()
    worker.wait_ready()
    return worker


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


needs_fork_server = pytest.mark.skipif(not fork_server_wanted(), reason="fork servers are used on Linux with CPU-only torch builds")


@needs_fork_server
def test_a_worker_is_a_fork_of_the_server_in_its_own_session_directory_and_environment(
        own_servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", "/secret/cache")
    monkeypatch.setenv("SET_AFTER_THE_SERVER_STARTED", "no")
    worker = started()
    try:
        assert isinstance(worker.process, ForkedProcess)
        (server,) = own_servers.values()
        pid = worker.process.pid
        assert int(_stat(pid)[1]) == server.process.pid  # its parent is the server, not the harness
        assert os.getsid(pid) == pid  # its own session: a timeout kills what the method started
        assert Path(os.readlink(f"/proc/{pid}/cwd")) == worker.home
        environ = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in v)
        assert "UNLEARN_AUDIT_CACHE" not in environ and environ["SET_AFTER_THE_SERVER_STARTED"] == "no"
        # A second worker is another fork of the same server.
        other = started()
        assert isinstance(other.process, ForkedProcess) and int(_stat(other.process.pid)[1]) == server.process.pid
        other.close()
        assert not Path(f"/proc/{other.process.pid}").exists()  # reaped, not a zombie
    finally:
        worker.close()


@needs_fork_server
def test_how_a_forked_worker_ended_reaches_the_harness(own_servers) -> None:
    worker = started()
    os.kill(worker.process.pid, signal.SIGSEGV)
    assert worker.process.wait(timeout=30) == -signal.SIGSEGV  # as subprocess reports it
    assert describe_exit(worker.process.returncode) == "killed by SIGSEGV"
    assert not worker.alive
    worker.close()


@needs_fork_server
def test_without_its_server_a_worker_is_spawned_and_a_dead_server_does_not_hang_its_workers(own_servers) -> None:
    worker = started()
    (server,) = own_servers.values()
    server.process.kill()
    server.process.wait()
    os.killpg(worker.process.pid, signal.SIGKILL)
    assert worker.process.wait(timeout=10) == fork_server.UNKNOWN_EXIT  # nobody left to say how it ended
    worker.close()
    again = started()
    assert not isinstance(again.process, ForkedProcess)  # spawned: a server that died is not restarted
    again.close()


@needs_fork_server
def test_a_shared_server_forks_the_workers_of_other_harness_processes(own_servers) -> None:
    """An xdist controller's server: each xdist worker connects and hears only its own workers' ends;
    a connection that goes away ends neither the server nor anyone else's workers."""
    address = prepare_fork_server(shared=True)
    (server,) = own_servers.values()
    assert address and Path(address).parent == server.home
    mine = started()  # through the controller's own connection
    own_servers[sys.executable] = connect_fork_server(address)  # now as an xdist worker would
    theirs = started()
    try:
        assert isinstance(theirs.process, ForkedProcess) and theirs.process.server is not server
        assert int(_stat(theirs.process.pid)[1]) == server.process.pid  # forked by the shared server
        os.kill(theirs.process.pid, signal.SIGSEGV)
        assert theirs.process.wait(timeout=30) == -signal.SIGSEGV
        assert theirs.process.pid not in server.exits  # told to the connection that asked
        own_servers[sys.executable].close()
        assert mine.alive and server.process.poll() is None
        mine.ask_to_exit()
        assert mine.process.wait(timeout=30) == 0
    finally:
        theirs.close()
        mine.close()
        server.close()
    assert server.process.returncode == 0


def test_no_server_at_the_address_means_spawned_workers(own_servers, tmp_path: Path) -> None:
    own_servers[sys.executable] = connect_fork_server(str(tmp_path / "nobody.sock"))
    worker = started()
    assert not isinstance(worker.process, ForkedProcess)
    assert "cannot connect" in own_servers[sys.executable].why
    worker.close()


def _launch(address: str, code: str, **kwargs) -> subprocess.Popen:
    """`python -u -c CODE` as execnet starts an xdist worker, through the launcher."""
    return subprocess.Popen([sys.executable, "-m", "unlearn_audit.engine.xdist_launcher", address, "-u", "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@needs_fork_server
def test_the_xdist_launcher_runs_python_as_a_fork_of_the_server(own_servers, tmp_path: Path) -> None:
    address = prepare_fork_server(shared=True)
    (server,) = own_servers.values()
    code = ("import os, sys, json; line = sys.stdin.readline(); "
            "print(json.dumps([os.getppid(), os.getcwd(), os.environ.get('PROBE'), sys.path[0], sys.argv, line])); "
            "sys.exit(3)")
    run = _launch(address, code, cwd=tmp_path, env={**os.environ, "PROBE": "seen"})
    out, err = run.communicate("through the pipe\n", timeout=60)
    assert run.returncode == 3, err
    ppid, cwd, probe, first_path, argv, line = json.loads(out)
    assert ppid == server.process.pid  # forked by the server, not started by the launcher
    assert (cwd, probe, first_path, argv, line) == (str(tmp_path), "seen", "", ["-c"], "through the pipe\n")
    # Signals reach the worker, and the launcher ends as it did.
    run = _launch(address, "import sys, time; print('up', flush=True); time.sleep(60)")
    assert run.stdout.readline() == "up\n"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == -signal.SIGTERM
    run.communicate()
    # A server that dies leaves the launcher standing in for its worker until the worker ends.
    run, worker = _forked_launch(address)
    server.process.kill()
    server.process.wait()
    with pytest.raises(subprocess.TimeoutExpired):
        run.wait(timeout=1)
    os.kill(worker, signal.SIGTERM)  # the orphan ends; nobody can say how
    assert run.wait(timeout=30) == 255
    assert _gone(worker)
    run.stdout.close(), run.stdin.close(), run.stderr.close()
    server.close()


def _forked_launch(address: str) -> tuple[subprocess.Popen, int]:
    """A launcher whose worker sleeps, once the launcher has heard "forked"; and the worker's pid."""
    run = _launch(address, "import os, time; print(os.getpid(), flush=True); time.sleep(120)")
    worker = int(run.stdout.readline())
    for _ in range(300):  # the launcher hands its stdin over for good once it has heard "forked"
        if os.readlink(f"/proc/{run.pid}/fd/0") == os.devnull:
            break
        time.sleep(0.01)
    return run, worker


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _stat(pid)[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@needs_fork_server
def test_a_killed_worker_or_launcher_ends_both(own_servers) -> None:
    """SIGKILL cannot be relayed: a worker killed so makes its launcher end as killed, and a launcher
    killed so (execnet's last resort) makes the server kill its worker."""
    address = prepare_fork_server(shared=True)
    (server,) = own_servers.values()
    try:
        run, worker = _forked_launch(address)
        os.kill(worker, signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
        run.stdout.close(), run.stdin.close(), run.stderr.close()
        run, worker = _forked_launch(address)
        run.kill()
        run.wait(timeout=30)
        assert _gone(worker), "the worker outlived its killed launcher"
        run.stdout.close(), run.stdin.close(), run.stderr.close()
    finally:
        server.close()


@needs_fork_server
def test_a_temp_dir_too_long_for_a_socket_means_no_shared_server(own_servers, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert prepare_fork_server(shared=True) is None  # xdist workers then start their own
    (server,) = own_servers.values()
    assert server.address is None and server.wait_ready()
    server.close()


def test_without_a_server_the_xdist_launcher_is_plain_python(tmp_path: Path) -> None:
    run = _launch(str(tmp_path / "nobody.sock"), "import os; print(os.getppid())")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0 and int(out) == os.getpid(), err  # exec'd in place: the launcher itself


def test_the_fork_server_can_be_turned_off(own_servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fork_server.DISABLE_ENV, "0")
    worker = started()
    assert not isinstance(worker.process, ForkedProcess) and not own_servers
    worker.close()


def test_no_fork_server_beside_a_gpu_build_of_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking after a GPU driver was initialised is not safe: GPU builds spawn, decided without importing torch."""
    (tmp_path / "torch" / "lib").mkdir(parents=True)
    (tmp_path / "torch" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)  # find_spec looks at sys.path again
    monkeypatch.delenv(fork_server.DISABLE_ENV, raising=False)
    if not fork_server.sys.platform.startswith("linux"):
        pytest.skip("fork servers are Linux-only")
    assert fork_server_wanted()
    (tmp_path / "torch" / "lib" / "libtorch_cuda.so").write_bytes(b"")
    assert not fork_server_wanted()
